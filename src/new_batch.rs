//! A request to create a batch, and the rules it must follow.

use serde::{Deserialize, Serialize};

use crate::{Error, text};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewBatch {
    /// Shown on the page: not blank, no control characters.
    #[cfg_attr(feature = "ssr", schema(min_length = 1, max_length = 200))]
    pub name: String,
    /// The items' names, in the order they are shown and processed.
    #[cfg_attr(feature = "ssr", schema(min_items = 1, max_items = 10_000))]
    pub items: Vec<String>,
}

impl NewBatch {
    pub const MAX_NAME_CHARS: usize = 200;
    pub const MAX_ITEM_NAME_CHARS: usize = 500;
    pub const MAX_ITEMS: usize = 10_000;

    /// From the home page's form: one item per line, blank lines ignored.
    pub fn from_lines(name: &str, lines: &str) -> Self {
        Self {
            name: name.to_owned(),
            items: lines.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect(),
        }
    }

    /// A demo batch of `n` made-up photos.
    pub fn demo(n: usize) -> Self {
        let width = n.to_string().len().max(3);
        Self {
            name: format!("Demo batch of {n} photos"),
            items: (1..=n).map(|i| format!("photo-{i:0width$}.jpg")).collect(),
        }
    }

    /// Trims the names and checks every rule, or says which one is broken.
    pub fn validate(self) -> Result<Self, Error> {
        let name = self.name.trim().to_owned();
        if name.is_empty() {
            return Err(Error::Invalid("name must not be empty".into()));
        }
        if name.chars().count() > Self::MAX_NAME_CHARS {
            return Err(Error::Invalid(format!("name must be at most {} characters", Self::MAX_NAME_CHARS)));
        }
        text::check_line("name", &name)?;
        if self.items.is_empty() {
            return Err(Error::Invalid("a batch needs at least one item".into()));
        }
        if self.items.len() > Self::MAX_ITEMS {
            return Err(Error::Invalid(format!(
                "a batch starts with at most {} items; add more with POST /api/batches/{{id}}/items",
                Self::MAX_ITEMS
            )));
        }
        Ok(Self { name, items: item_names(self.items)? })
    }
}

/// Items added at the end of a batch that is not finished: `POST /api/batches/{id}/items`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewItems {
    /// Their names, in the order they are shown and processed, after the batch's.
    #[cfg_attr(feature = "ssr", schema(min_items = 1, max_items = 10_000))]
    pub items: Vec<String>,
}

impl NewItems {
    /// Trims the names and checks the rules a batch's items follow.
    pub fn validate(self) -> Result<Self, Error> {
        if self.items.is_empty() || self.items.len() > NewBatch::MAX_ITEMS {
            return Err(Error::Invalid(format!("add 1 to {} items at once", NewBatch::MAX_ITEMS)));
        }
        Ok(Self { items: item_names(self.items)? })
    }
}

/// Trims each item's name and checks it: not blank, one line, at most
/// [`NewBatch::MAX_ITEM_NAME_CHARS`] characters.
fn item_names(names: Vec<String>) -> Result<Vec<String>, Error> {
    let mut items = Vec::with_capacity(names.len());
    for (i, item) in names.into_iter().enumerate() {
        let item = item.trim();
        if item.is_empty() {
            return Err(Error::Invalid(format!("item {i} has an empty name")));
        }
        text::check_line(&format!("item {i}"), item)?;
        if item.chars().count() > NewBatch::MAX_ITEM_NAME_CHARS {
            return Err(Error::Invalid(format!(
                "item {i} name must be at most {} characters",
                NewBatch::MAX_ITEM_NAME_CHARS
            )));
        }
        items.push(item.to_owned());
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: &str, items: usize) -> NewBatch {
        NewBatch { name: name.into(), items: (0..items).map(|i| format!("{i}.jpg")).collect() }
    }

    #[test]
    fn accepts_and_trims() {
        let ok = NewBatch { name: "  photos ".into(), items: vec![" a.jpg ".into()] }.validate().unwrap();
        assert_eq!(ok, NewBatch { name: "photos".into(), items: vec!["a.jpg".into()] });
    }

    #[test]
    fn rejects_empty_or_long_name() {
        assert!(new("", 1).validate().is_err());
        assert!(new("   ", 1).validate().is_err());
        assert!(new(&"é".repeat(200), 1).validate().is_ok());
        assert!(new(&"é".repeat(201), 1).validate().is_err());
    }

    #[test]
    fn rejects_zero_or_too_many_items() {
        assert!(new("b", 0).validate().is_err());
        assert!(new("b", NewBatch::MAX_ITEMS).validate().is_ok());
        let err = new("b", NewBatch::MAX_ITEMS + 1).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "a batch starts with at most 10000 items; add more with POST /api/batches/{id}/items"
        );
    }

    #[test]
    fn added_items_follow_the_same_rules() {
        let add =
            |items: Vec<&str>| NewItems { items: items.into_iter().map(String::from).collect() }.validate();
        assert_eq!(add(vec![" a.jpg ", "b.jpg"]).unwrap().items, ["a.jpg", "b.jpg"]);
        for bad in [vec![], vec!["  "], vec!["a\u{0}b"], vec!["x\u{202E}y"]] {
            assert!(add(bad.clone()).is_err(), "{bad:?}");
        }
        assert!(add(vec!["x"; NewBatch::MAX_ITEMS + 1]).is_err());
    }

    #[test]
    fn rejects_blank_or_long_item_names() {
        let blank = NewBatch { name: "b".into(), items: vec!["a".into(), " ".into()] };
        assert_eq!(blank.validate().unwrap_err().to_string(), "item 1 has an empty name");
        let long = NewBatch { name: "b".into(), items: vec!["x".repeat(501)] };
        assert!(long.validate().is_err());
    }

    #[test]
    fn rejects_control_and_direction_characters() {
        assert!(new("a\0b", 1).validate().is_err());
        let bidi = NewBatch { name: "b".into(), items: vec!["ok".into(), "invoice\u{202E}fdp.exe".into()] };
        assert!(bidi.validate().unwrap_err().to_string().starts_with("item 1 must not hold"));
    }

    #[test]
    fn form_lines() {
        let b = NewBatch::from_lines("b", "a.jpg\r\n\n  b.jpg  \n");
        assert_eq!(b.items, vec!["a.jpg", "b.jpg"]);
    }

    #[test]
    fn demo_names_are_padded_and_valid() {
        let d = NewBatch::demo(20);
        assert_eq!(d.items.first().unwrap(), "photo-001.jpg");
        assert_eq!(d.items.len(), 20);
        assert!(d.validate().is_ok());
    }
}
