//! The Server-Sent Events wire format: every event a stream sends is framed here.

use bytes::Bytes;

/// Tells the browser's `EventSource` to wait a second before reconnecting on its own.
pub const RETRY: Bytes = Bytes::from_static(b"retry: 1000\n\n");
/// A comment line: keeps an idle connection (and every proxy on its way) open.
pub const PING: Bytes = Bytes::from_static(b": ping\n\n");

/// `id: <id>\nevent: <event>\ndata: <data>\n\n`, without the `id` line when there is none.
/// `data` is one line of JSON: serde_json never writes a raw newline.
pub fn frame(event: &str, id: Option<u64>, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + event.len() + 40);
    if let Some(id) = id {
        out.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_with_and_without_an_id() {
        assert_eq!(frame("progress", Some(7), b"{\"a\":1}"), "id: 7\nevent: progress\ndata: {\"a\":1}\n\n");
        assert_eq!(frame("timeout", None, b"{}"), "event: timeout\ndata: {}\n\n");
    }
}
