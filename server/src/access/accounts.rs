//! Accounts: users, their roles and their API tokens. A token is shown once, when it is made;
//! the database keeps only its SHA-256, which is enough for a random 256-bit secret (a slow
//! password hash guards guessable secrets, and these are not guessable).
//!
//! Managed from the command line (`batchwatch user ...`); requests are checked in `auth`.

use batchwatch_core::{Millis, Role, Viewer};
use sha2::{Digest, Sha256};
use sqlx::AnyPool;

use crate::error::{Error, Result};

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub viewer: Viewer,
    pub role: Role,
    pub token_id: String,
}

const PRINCIPAL: &str = "SELECT u.id, u.name, u.role, t.id FROM tokens t JOIN users u ON u.id = t.user_id \
     WHERE t.revoked_at IS NULL AND ";

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// A new token's secret, to be shown once.
pub struct Secret(pub String);

#[derive(Clone, Debug)]
pub struct Accounts {
    pool: AnyPool,
}

impl Accounts {
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }

    /// Creates a user with a first token.
    pub async fn create_user(&self, name: &str, role: Role, now: Millis) -> Result<(TokenInfo, Secret)> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Error::Unprocessable("a user name has 1 to 100 characters".into()));
        }
        batchwatch_core::text::check_line("a user name", name)?;
        let taken =
            sqlx::query("SELECT 1 FROM users WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        if taken.is_some() {
            return Err(Error::Unprocessable(format!("a user named {name:?} exists already")));
        }
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query("INSERT INTO users (id, name, role, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&id)
            .bind(name)
            .bind(role.as_str())
            .bind(now)
            .execute(&self.pool)
            .await?;
        self.create_token(name, now).await
    }

    /// Gives an existing user one more token.
    pub async fn create_token(&self, user: &str, now: Millis) -> Result<(TokenInfo, Secret)> {
        let found: Option<(String, String)> = sqlx::query_as("SELECT id, role FROM users WHERE name = $1")
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        let Some((user_id, role)) = found else { return Err(Error::NotFound("user")) };
        let role = role.parse()?;
        let secret = new_secret()?;
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query("INSERT INTO tokens (id, user_id, hash, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&id)
            .bind(&user_id)
            .bind(hash(&secret))
            .bind(now)
            .execute(&self.pool)
            .await?;
        let info = TokenInfo { id, user: user.to_owned(), role, created_at: now, revoked_at: None };
        Ok((info, Secret(secret)))
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        Ok(sqlx::query_as(
            "SELECT t.id, u.name AS user, u.role, t.created_at, t.revoked_at \
             FROM tokens t JOIN users u ON u.id = t.user_id ORDER BY u.name, t.created_at",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes a token; it stops working at once. Revoking twice is harmless.
    pub async fn revoke(&self, token_id: &str, now: Millis) -> Result<()> {
        let done = sqlx::query("UPDATE tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
            .bind(now)
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound("token"));
        }
        Ok(())
    }

    /// Whose token this is, if it is valid and not revoked.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Principal>> {
        self.principal_where("t.hash = $1", &hash(secret)).await
    }

    /// Whose token this is, by the token's id, if it is not revoked: how a session, which
    /// holds the id, learns at every request that its token still stands.
    pub async fn principal(&self, token_id: &str) -> Result<Option<Principal>> {
        self.principal_where("t.id = $1", token_id).await
    }

    async fn principal_where(&self, condition: &str, value: &str) -> Result<Option<Principal>> {
        let row: Option<(String, String, String, String)> =
            sqlx::query_as(&format!("{PRINCIPAL}{condition}")).bind(value).fetch_optional(&self.pool).await?;
        row.map(|(user_id, name, role, token_id)| {
            Ok(Principal { viewer: Viewer { user_id, name }, role: role.parse()?, token_id })
        })
        .transpose()
    }

    pub async fn user_count(&self) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users").fetch_one(&self.pool).await?;
        Ok(n)
    }
}

/// `bw_` and 32 random bytes in hex.
pub(crate) fn new_secret() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("bw_{}", hex(&bytes)))
}

pub(crate) fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_prefixed() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with("bw_") && a.len() == 67, "{a}");
    }

    #[test]
    fn the_hash_is_sha256_hex() {
        assert_eq!(hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
