//! Shapes shared by several resources, and helpers to read common headers.

use std::borrow::Cow;

use onestop_model::catalog::localised_name;
use onestop_model::entities::{attachment, case, supplement};
use onestop_model::{Locale, SubmissionKind};
use sea_orm::prelude::DateTimeUtc;
use uuid::Uuid;

use poem::Request;
use poem_openapi::registry::MetaSchemaRef;
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::Object;

use crate::cases::{self, CaseRecord, Letter, Names, SubmissionRecord};

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

// A case as its applicant sees it.
#[derive(Object, Clone, serde::Serialize, serde::Deserialize)]
pub struct CaseView {
    pub id: Uuid,
    #[oai(skip_serializing_if_is_none)]
    pub service: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub form: Option<String>,
    /// The service's or form's name in the reader's language.
    pub title: String,
    pub agency: NamedRef,
    /// `submitted`, `in_review`, `approved`, `rejected`, `info_requested`
    /// or `withdrawn`.
    pub status: String,
    pub attachments: Vec<Uuid>,
    pub etag: String,
    pub updated_at: DateTimeUtc,
}

impl CaseView {
    pub fn new(record: CaseRecord, names: &Names) -> Self {
        let case = record.case;
        CaseView {
            title: names.subject(cases::subject_code(&case)),
            agency: agency_ref(&case, names),
            status: case.status.as_str().to_owned(),
            attachments: record.attachments,
            etag: cases::etag(&case),
            updated_at: case.updated_at,
            id: case.id,
            service: case.service_code,
            form: case.form_code,
        }
    }
}

/// The agency a case is with, named in the reader's language.
pub fn agency_ref(case: &case::Model, names: &Names) -> NamedRef {
    NamedRef {
        id: case.agency_id.clone(),
        name: names.agency(&case.agency_id),
    }
}

#[derive(Object, Clone, serde::Serialize, serde::Deserialize)]
pub struct SubmissionView {
    pub id: Uuid,
    /// `one_stop` or `form`.
    pub kind: String,
    pub created_at: DateTimeUtc,
    pub cases: Vec<CaseView>,
}

impl SubmissionView {
    pub fn new(record: SubmissionRecord, names: &Names) -> Self {
        SubmissionView {
            id: record.submission.id,
            kind: match record.submission.kind {
                SubmissionKind::OneStop => "one_stop".into(),
                SubmissionKind::Form => "form".into(),
            },
            created_at: record.submission.created_at,
            cases: record
                .cases
                .into_iter()
                .map(|case| CaseView::new(case, names))
                .collect(),
        }
    }
}

// A document an office sent back.
#[derive(Object)]
pub struct DocumentView {
    pub id: Uuid,
    pub case_id: Uuid,
    pub title: String,
    pub body: String,
    pub attachments: Vec<Uuid>,
    pub created_at: DateTimeUtc,
}

impl From<Letter> for DocumentView {
    fn from(letter: Letter) -> Self {
        DocumentView {
            id: letter.document.id,
            case_id: letter.document.case_id,
            title: letter.document.title,
            body: letter.document.body,
            attachments: letter.attachments,
            created_at: letter.document.created_at,
        }
    }
}

// An applicant's answer to a request for more information.
#[derive(Object)]
pub struct SupplementView {
    pub id: Uuid,
    pub case_id: Uuid,
    pub text: String,
    pub attachments: Vec<Uuid>,
    pub created_at: DateTimeUtc,
}

impl From<supplement::Model> for SupplementView {
    fn from(model: supplement::Model) -> Self {
        SupplementView {
            id: model.id,
            case_id: model.case_id,
            text: model.text,
            attachments: serde_json::from_value(model.attachments).unwrap_or_default(),
            created_at: model.created_at,
        }
    }
}

#[derive(Object)]
pub struct AttachmentView {
    pub id: Uuid,
    /// Decided from the bytes: `image/jpeg`, `image/png` or `application/pdf`.
    pub media_type: String,
    pub byte_size: i64,
    /// SHA-256 of the stored bytes, hexadecimal.
    pub sha256: String,
    pub file_name: String,
    pub created_at: DateTimeUtc,
}

impl From<attachment::Model> for AttachmentView {
    fn from(model: attachment::Model) -> Self {
        AttachmentView {
            id: model.id,
            media_type: model.media_type,
            byte_size: model.byte_size,
            sha256: model.sha256,
            file_name: model.file_name,
            created_at: model.created_at,
        }
    }
}

/// The language to answer in: `Accept-Language` if it names one we have,
/// else the account's own.
pub fn reader_locale(request: &Request, account_locale: Option<&str>) -> Locale {
    requested_locale(request)
        .or_else(|| account_locale.map(Locale::negotiate))
        .unwrap_or(Locale::DEFAULT)
}

/// The language `Accept-Language` asks for, if it names one we have.
pub fn requested_locale(request: &Request) -> Option<Locale> {
    request
        .header("accept-language")
        .and_then(Locale::from_accept_language)
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
