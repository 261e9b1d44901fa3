//! The page's one JSON reader. Server functions' answers are decoded from bytes
//! (`serde_json::from_slice`); leptos's default resource codec and `serde_json::from_str`
//! would decode the same types again through a second reader, a second copy of every
//! type's deserializer in the wasm. Resources and the event streams decode through
//! [`from_str`] here instead.

use leptos::server::codee::{Decoder, Encoder};
use serde::{Serialize, de::DeserializeOwned};

/// Decodes JSON text through the byte reader the server functions use.
pub fn from_str<T: DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    serde_json::from_slice(text.as_bytes())
}

/// The codec of the pages' resources: the server writes the resolved value into the page as
/// JSON, and the browser reads it back with [`from_str`].
pub struct Json;

impl<T: Serialize> Encoder<T> for Json {
    type Error = serde_json::Error;
    type Encoded = String;

    fn encode(value: &T) -> Result<String, Self::Error> {
        serde_json::to_string(value)
    }
}

impl<T: DeserializeOwned> Decoder<T> for Json {
    type Error = serde_json::Error;
    type Encoded = str;

    fn decode(text: &str) -> Result<T, Self::Error> {
        from_str(text)
    }
}
