//! The page's one JSON reader. Server functions' answers are decoded from bytes
//! (`serde_json::from_slice`); leptos's default resource codec and `serde_json::from_str`
//! would decode the same types again through a second reader, a second copy of every
//! type's deserializer in the wasm. Resources and the event streams decode through
//! [`from_str`] here instead.

use leptos::{
    prelude::Resource,
    server::codee::{Decoder, Encoder},
};
use serde::{Serialize, de::DeserializeOwned};

/// Decodes JSON text through the byte reader the server functions use.
pub fn from_str<T: DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    serde_json::from_slice(text.as_bytes())
}

/// A resource whose value the server writes into the page for the browser to read back with
/// [`from_str`]: the pages' one way to make a resource (`Resource::new` would bring leptos's
/// codec, and `from_str`'s second reader, back into the wasm).
pub fn resource<T, S, Fut>(
    source: impl Fn() -> S + Send + Sync + 'static,
    fetcher: impl Fn(S) -> Fut + Send + Sync + 'static,
) -> Resource<T, Json>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    S: Send + Sync + Clone + PartialEq + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    // Not blocking: the pages wait for their resources through `Suspense` and async rendering.
    Resource::new_with_options(source, fetcher, false)
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
