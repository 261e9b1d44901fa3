//! `GET /api/batches/{id}/export?format=csv|ndjson`: every item of a batch, streamed as it is
//! read. A task reads the items a page at a time (keyset on `position`, each page its own
//! short query rather than one transaction held open for the whole download) and hands the
//! encoded page to the body through a small channel: the server holds a page or two, whatever
//! the batch's size, and a client that reads slowly slows the reading down.

use std::io;

use axum::{
    body::Body,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use batchwatch_core::{BatchId, ItemProgress, ItemStatus, Millis};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};

use crate::{
    access::auth::User,
    batches::Batches,
    error::{ErrorBody, Result},
    extract::{Path, Query},
};

/// Items read per query.
const PAGE: u32 = 1_000;

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A header line, then one line per item (spreadsheets).
    #[default]
    Csv,
    /// One JSON object per line.
    Ndjson,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `csv` (the default) or `ndjson`.
    #[serde(default)]
    format: Format,
}

/// One exported line.
#[derive(Debug, Serialize)]
pub struct ExportedItem {
    pub id: String,
    pub name: String,
    pub status: ItemStatus,
    pub error: Option<String>,
    pub attempts: u32,
    /// RFC 3339, UTC.
    pub updated_at: String,
}

impl ExportedItem {
    pub fn time(ms: Millis) -> String {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default()
    }

    fn from_item(item: ItemProgress) -> Self {
        Self {
            id: item.id.to_string(),
            name: item.name,
            status: item.status,
            error: item.error,
            attempts: item.attempts,
            updated_at: Self::time(item.updated_at),
        }
    }
}

/// Download every item of a batch, in order: `id, name, status, error, attempts, updated_at`.
#[utoipa::path(
    get,
    path = "/api/batches/{id}/export",
    params(("id" = BatchId, Path, description = "The batch's id"), ExportQuery),
    responses(
        (status = 200, description = "Every item, streamed", content((String = "text/csv"), (String = "application/x-ndjson"))),
        (status = 400, description = "Not a batch id", body = ErrorBody),
        (status = 401, description = "No valid token or session", body = ErrorBody),
        (status = 403, description = "A worker token", body = ErrorBody),
        (status = 404, description = "No such batch, or another user's", body = ErrorBody),
        (status = 422, description = "An unknown format", body = ErrorBody),
    ),
)]
pub async fn export(
    State(batches): State<Batches>,
    User(viewer): User,
    Path(id): Path<BatchId>,
    Query(ExportQuery { format }): Query<ExportQuery>,
) -> Result<Response> {
    batches.check_owner(&viewer.user_id, id).await?;
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(2);
    tokio::spawn(async move {
        if let Format::Csv = format
            && tx.send(Ok(Bytes::from_static(b"id,name,status,error,attempts,updated_at\r\n"))).await.is_err()
        {
            return;
        }
        let mut after = None;
        loop {
            let page = match batches.store().export_page(id, after, PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    // The client sees a cut download, never a file that looks whole.
                    tracing::error!(%error, batch = %id, "export failed");
                    let _ = tx.send(Err(io::Error::other("export failed"))).await;
                    return;
                }
            };
            let Some(last) = page.last() else { return };
            after = Some(last.position);
            let chunk = encode(format, page.into_iter().map(ExportedItem::from_item));
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    });
    // Fused: the compression layer polls a body once more after its end.
    let body = Body::from_stream(
        futures::stream::unfold(rx, |mut rx| async move {
            let chunk = rx.recv().await?;
            Some((chunk, rx))
        })
        .fuse(),
    );
    let (content_type, extension) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Ndjson => ("application/x-ndjson", "ndjson"),
    };
    let disposition = format!("attachment; filename=\"batch-{id}.{extension}\"");
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_DISPOSITION, HeaderValue::try_from(disposition).expect("an id and a word")),
        ],
        body,
    )
        .into_response())
}

fn encode(format: Format, items: impl Iterator<Item = ExportedItem>) -> Bytes {
    let mut out = Vec::new();
    match format {
        Format::Ndjson => {
            for item in items {
                serde_json::to_writer(&mut out, &item).expect("export lines always serialize");
                out.push(b'\n');
            }
        }
        Format::Csv => {
            let mut csv = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(&mut out);
            for item in items {
                let attempts = item.attempts.to_string();
                let error = item.error.as_deref().map(inert).unwrap_or_default();
                let record = [
                    item.id.as_str(),
                    &inert(&item.name),
                    item.status.as_str(),
                    &error,
                    &attempts,
                    &item.updated_at,
                ];
                csv.write_record(record).expect("writing to memory does not fail");
            }
            csv.flush().expect("writing to memory does not fail");
        }
    }
    out.into()
}

/// A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab or carriage return
/// first) gets a `'` before it, as OWASP advises: names and errors come from anyone who can
/// create a batch or report.
fn inert(text: &str) -> String {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}"),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, error: Option<&str>) -> ExportedItem {
        ExportedItem {
            id: "i".into(),
            name: name.into(),
            status: ItemStatus::Failed,
            error: error.map(Into::into),
            attempts: 2,
            updated_at: ExportedItem::time(1_700_000_000_123),
        }
    }

    #[test]
    fn csv_quotes_what_needs_it_and_defuses_formulas() {
        let out = encode(
            Format::Csv,
            [item("a,b \"c\".jpg", Some("line 1\nline 2")), item("=HYPERLINK(\"x\")", Some("-1"))]
                .into_iter(),
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "i,\"a,b \"\"c\"\".jpg\",failed,\"line 1\nline 2\",2,2023-11-14T22:13:20.123Z\r\n\
             i,\"'=HYPERLINK(\"\"x\"\")\",failed,'-1,2,2023-11-14T22:13:20.123Z\r\n"
        );
    }

    #[test]
    fn ndjson_is_one_object_a_line() {
        let out = encode(Format::Ndjson, [item("=a", None)].into_iter());
        let line: serde_json::Value = serde_json::from_slice(out.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(line["name"], "=a", "JSON is data, not a formula: kept as it is");
        assert_eq!(line["attempts"], 2);
        assert_eq!(line["error"], serde_json::Value::Null);
    }
}
