//! Shapes shared by several resources, and helpers to read common headers.

use onestop_model::catalog::localised_name;
use onestop_model::Locale;
use std::borrow::Cow;

use poem::Request;
use poem_openapi::registry::MetaSchemaRef;
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::Object;

/// Something with an id and a name in the reader's language.
#[derive(Object, Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NamedRef {
    pub id: String,
    pub name: String,
}

impl NamedRef {
    pub fn new(id: &str, names: &serde_json::Value, locale: Locale) -> Self {
        NamedRef {
            id: id.to_owned(),
            name: localised_name(names, locale),
        }
    }
}

/// The language to answer in: `Accept-Language` if it names one we have,
/// else the account's own.
pub fn reader_locale(request: &Request, account_locale: Option<&str>) -> Locale {
    request
        .header("accept-language")
        .and_then(Locale::from_accept_language)
        .or_else(|| account_locale.map(Locale::negotiate))
        .unwrap_or(Locale::DEFAULT)
}

/// A string field of a request body. The framework's `String` also takes a
/// JSON number or boolean and turns it into text; a field the document
/// declares as a string must be one, so `12` or `true` get 400 like any
/// other value of the wrong type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Text(pub String);

impl Text {
    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::ops::Deref for Text {
    type Target = String;

    fn deref(&self) -> &String {
        &self.0
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Text> for String {
    fn from(text: Text) -> String {
        text.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Type for Text {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        String::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        String::schema_ref()
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ParseFromJSON for Text {
    fn parse_from_json(value: Option<serde_json::Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            serde_json::Value::String(text) => Ok(Text(text)),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl ToJSON for Text {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::String(self.0.clone()))
    }
}
