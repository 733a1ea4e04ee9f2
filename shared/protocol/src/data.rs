//! Event data as JSON text: what the gateway stores, reads and forwards
//! without building a tree of it.
//!
//! An event's `data` is validated once, when it is published; from then on
//! the gateway carries it as the text it was stored as. Parsing it again on
//! every read would cost many times its size in memory (a 96 KiB array of
//! small numbers is over a million tree nodes), for nothing: the text goes
//! to the wire unchanged.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// Event data kept as its JSON text (never parsed into a tree on the way
/// through). Serialises as the JSON it holds; compares by text.
#[derive(Clone)]
pub struct RawData(Box<RawValue>);

impl RawData {
    /// The data held in `text`, checked to be one JSON value (a scan, no
    /// tree). Errors name what is wrong, never the text.
    pub fn from_text(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self)
    }

    /// The compact JSON text of `value`.
    pub fn from_value(value: &Value) -> Self {
        // A `Value` always serialises: its map keys are strings.
        match serde_json::value::to_raw_value(value) {
            Ok(raw) => Self(raw),
            Err(_) => Self::null(),
        }
    }

    /// JSON `null`.
    pub fn null() -> Self {
        Self(RawValue::NULL.to_owned())
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The text's length in bytes: what it costs on the wire.
    pub fn len(&self) -> usize {
        self.0.get().len()
    }

    /// Never true: the text of a JSON value is never empty.
    pub fn is_empty(&self) -> bool {
        self.0.get().is_empty()
    }

    /// Parses the text into a tree (for the few places that look inside
    /// data, and tests).
    pub fn value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }
}

impl Default for RawData {
    fn default() -> Self {
        Self::null()
    }
}

impl From<Value> for RawData {
    fn from(v: Value) -> Self {
        Self::from_value(&v)
    }
}

impl From<&Value> for RawData {
    fn from(v: &Value) -> Self {
        Self::from_value(v)
    }
}

impl PartialEq for RawData {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for RawData {}

impl std::fmt::Debug for RawData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 200;
        let text = self.get();
        match text.char_indices().nth(SHOWN) {
            Some((cut, _)) => write!(f, "RawData({}… {} bytes)", &text[..cut], text.len()),
            None => write!(f, "RawData({text})"),
        }
    }
}

impl std::fmt::Display for RawData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for RawData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawData {
    /// From JSON text (`serde_json::from_str`, `from_slice`): the value's
    /// text, unparsed. Not through a buffering format (an internally
    /// tagged enum, `from_value`): RawValue cannot be read from those.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn carries_the_text_unchanged_and_serialises_as_it() {
        let d = RawData::from_text(r#"{"a": [1, 2]}"#.into()).unwrap();
        assert_eq!(d.get(), r#"{"a": [1, 2]}"#);
        assert_eq!(d.value(), json!({"a": [1, 2]}));
        #[derive(Serialize, Deserialize)]
        struct W {
            data: RawData,
        }
        let w = serde_json::to_string(&W { data: d.clone() }).unwrap();
        assert_eq!(w, r#"{"data":{"a": [1, 2]}}"#);
        let back: W = serde_json::from_str(&w).unwrap();
        assert_eq!(back.data, d);
    }

    #[test]
    fn refuses_text_that_is_not_one_json_value() {
        assert!(RawData::from_text("{".into()).is_err());
        assert!(RawData::from_text("1 2".into()).is_err());
        assert!(RawData::from_text(String::new()).is_err());
    }

    #[test]
    fn from_a_value_is_compact() {
        let d = RawData::from(json!({"n": [1, 2], "text": "hi"}));
        assert_eq!(d.get(), r#"{"n":[1,2],"text":"hi"}"#);
        assert_eq!(d.len(), d.get().len());
        assert_eq!(RawData::default().get(), "null");
    }

    #[test]
    fn debug_shows_a_bounded_prefix() {
        let d = RawData::from(json!("x".repeat(10_000)));
        let shown = format!("{d:?}");
        assert!(shown.len() < 300, "{}", shown.len());
        assert!(shown.contains("10002 bytes"), "{shown}");
    }
}
