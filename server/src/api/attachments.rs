use poem::http::StatusCode;
use poem::{Body, Request, RequestBody};
use poem_openapi::param::{Header, Path};
use poem_openapi::payload::{Binary, Json};
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions, Object, OpenApi,
    ResponseContent,
};
use uuid::Uuid;

use super::{AttachmentView, Tag};
use crate::access::viewed_attachment;
use crate::auth::BearerAuth;
use crate::error::{ApiError, Problem, ProblemJson};
use crate::problems;
use crate::state::AppState;
use crate::uploads;
use crate::uploads::thumbnails;
use onestop_model::entities::attachment_thumbnail;
use sea_orm::EntityTrait;

pub struct AttachmentsApi;

/// `multipart/form-data` with one part named `file`, read as a stream: the
/// framework's own upload type spools the whole file first, which a
/// server taking thousands of phone photos must not do. The parser is
/// fed one network chunk at a time ([`uploads::OneChunkAtATime`]) so it
/// never holds more than that, however fast the client sends, and its
/// framing is checked on the way ([`uploads::multipart_front`]) so an
/// endless preamble or part header is refused at its bound.
pub struct FileUpload {
    multipart: multer::Multipart<'static>,
    refusal: std::sync::Arc<std::sync::OnceLock<uploads::multipart_front::FrontError>>,
}

impl FileUpload {
    /// The next part, or why the body cannot be read as a form.
    async fn next_field(&mut self) -> Result<Option<multer::Field<'static>>, ApiError> {
        self.multipart
            .next_field()
            .await
            .map_err(|error| match self.refusal.get() {
                Some(refusal) => ApiError::MalformedBody(refusal.to_string()),
                None => ApiError::MalformedBody(error.to_string()),
            })
    }
}

/// Bytes of one form part other than the file (an app's metadata, say).
const MAX_OTHER_PART_BYTES: u64 = 64 * 1024;

impl<'a> ApiExtractor<'a> for FileUpload {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(_registry: &mut Registry) {}

    fn request_meta() -> Option<MetaRequest> {
        let binary = MetaSchemaRef::Inline(Box::new(MetaSchema {
            format: Some("binary"),
            description: Some("A JPEG or PNG photo, or a PDF."),
            ..MetaSchema::new("string")
        }));
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "multipart/form-data",
                schema: MetaSchemaRef::Inline(Box::new(MetaSchema {
                    description: Some("A part named `file`; other parts are read past."),
                    properties: vec![("file", binary)],
                    required: vec!["file"],
                    ..MetaSchema::new("object")
                })),
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let is_multipart = request
            .content_type()
            .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("multipart/form-data"));
        if !is_multipart {
            let problem = Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                Some("send the file as multipart/form-data in a part named `file`".into()),
            );
            return Err(poem::Error::from_response(
                poem::IntoResponse::into_response(ProblemJson(problem)),
            ));
        }
        let boundary = request
            .content_type()
            .and_then(|ct| multer::parse_boundary(ct).ok())
            .ok_or_else(|| {
                let problem = ApiError::MalformedBody("the multipart boundary is missing".into())
                    .into_problem();
                poem::Error::from_response(poem::IntoResponse::into_response(ProblemJson(problem)))
            })?;
        let framed = uploads::multipart_front::Framed::new(
            body.take()?.into_bytes_stream(),
            boundary.as_bytes(),
            uploads::multipart_front::FrontLimits::default(),
        );
        let refusal = framed.refusal();
        // The file itself is bounded (413) where it is received; the whole
        // body by the edge.
        let constraints = multer::Constraints::new().size_limit(
            multer::SizeLimit::new()
                .per_field(MAX_OTHER_PART_BYTES)
                .for_field("file", u64::MAX),
        );
        Ok(FileUpload {
            multipart: multer::Multipart::with_constraints(
                uploads::OneChunkAtATime::new(framed),
                boundary,
                constraints,
            ),
            refusal,
        })
    }
}

#[derive(ApiResponse)]
pub enum AttachmentCreated {
    #[oai(status = 201)]
    Created(Json<AttachmentView>, #[oai(header = "Location")] String),
}

/// The bytes of a stored file, in its type (decided from the bytes at
/// upload).
#[derive(ResponseContent)]
pub enum StoredFile {
    #[oai(content_type = "image/jpeg")]
    Jpeg(Binary<Body>),
    #[oai(content_type = "image/png")]
    Png(Binary<Body>),
    #[oai(content_type = "application/pdf")]
    Pdf(Binary<Body>),
}

impl StoredFile {
    /// The body of a file stored as `media_type`; only accepted types are
    /// ever stored.
    fn new(media_type: &str, body: Body) -> Result<Self, ApiError> {
        match media_type {
            "image/jpeg" => Ok(StoredFile::Jpeg(Binary(body))),
            "image/png" => Ok(StoredFile::Png(Binary(body))),
            "application/pdf" => Ok(StoredFile::Pdf(Binary(body))),
            other => Err(ApiError::Internal(format!(
                "an attachment is stored with the unexpected type {other}"
            ))),
        }
    }
}

#[derive(ApiResponse)]
pub enum AttachmentContent {
    /// The stored bytes. Photos carry no metadata but their orientation.
    #[oai(status = 200)]
    Ok(
        StoredFile,
        #[oai(header = "Content-Length")] u64,
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Content-Disposition")] String,
        #[oai(header = "X-Content-Type-Options")] String,
        #[oai(header = "Accept-Ranges")] String,
    ),
    /// One byte range (`Range: bytes=first-last`), for large PDFs. A
    /// request for several ranges gets the whole file (200).
    #[oai(status = 206)]
    Partial(
        StoredFile,
        #[oai(header = "Content-Length")] u64,
        #[oai(header = "Content-Range")] String,
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Accept-Ranges")] String,
    ),
    /// The copy the app holds is current.
    #[oai(status = 304)]
    NotModified(#[oai(header = "ETag")] String),
    /// The range lies outside the file; `Content-Range` gives its size.
    #[oai(status = 416)]
    RangeNotSatisfiable(ProblemJson, #[oai(header = "Content-Range")] String),
}

/// Pending thumbnail: ask again after `Retry-After` seconds.
#[derive(Object)]
pub struct ThumbnailPending {
    /// Always `pending`.
    pub status: String,
}

#[derive(ApiResponse)]
pub enum ThumbnailContent {
    /// A JPEG at most 512 pixels on its longer edge, already upright, with
    /// no metadata.
    #[oai(status = 200, content_type = "image/jpeg")]
    Ok(
        Binary<Body>,
        #[oai(header = "Content-Length")] u64,
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
    ),
    /// The thumbnail is being made (moments after an upload).
    #[oai(status = 202)]
    Pending(Json<ThumbnailPending>, #[oai(header = "Retry-After")] u64),
    /// The copy the app holds is current.
    #[oai(status = 304)]
    NotModified(#[oai(header = "ETag")] String),
}

problems!(pub UploadProblems {
    BadRequest = 400, Unauthorized = 401, PayloadTooLarge = 413, UnsupportedMediaType = 415,
    UnprocessableEntity = 422, TooManyRequests = 429,
});
problems!(pub DownloadProblems { BadRequest = 400, Unauthorized = 401, NotFound = 404 });

fn etag_matches(if_none_match: Option<&str>, etag: &str) -> bool {
    if_none_match.is_some_and(|tags| {
        tags.split(',')
            .any(|t| t.trim().trim_start_matches("W/") == etag || t.trim() == "*")
    })
}

/// The one range to send, `None` for the whole file, or the problem of
/// an unsatisfiable one. `If-Range` with another ETag means the whole
/// file (RFC 9110 §13.1.5).
fn wanted_range(
    range: Option<&str>,
    if_range: Option<&str>,
    etag: &str,
    size: u64,
) -> Result<Option<std::ops::Range<u64>>, ProblemJson> {
    let Some(range) = range else { return Ok(None) };
    if if_range.is_some_and(|tag| tag.trim() != etag) {
        return Ok(None);
    }
    let unsatisfiable = || {
        ProblemJson(Problem::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range-not-satisfiable",
            Some(format!(
                "the file has {size} bytes; ask for a range within them"
            )),
        ))
    };
    let parsed = match http_range_header::parse_range_header(range) {
        Ok(parsed) => parsed,
        // A Range that is not `bytes=…` is ignored, as RFC 9110 allows.
        Err(_) if !range.trim_start().starts_with("bytes=") => return Ok(None),
        Err(_) => return Err(unsatisfiable()),
    };
    if size == 0 {
        return Err(unsatisfiable());
    }
    match parsed.validate(size) {
        Ok(ranges) if ranges.len() == 1 => {
            let only = &ranges[0];
            Ok(Some(*only.start()..*only.end() + 1))
        }
        // Several ranges: the whole file, which RFC 9110 allows.
        Ok(_) => Ok(None),
        Err(_) => Err(unsatisfiable()),
    }
}

/// The attachment, its look on the owner's record when someone else looks.
async fn look(
    state: &AppState,
    request: &Request,
    principal: &crate::auth::Principal,
    id: Uuid,
    what: &'static str,
) -> Result<onestop_model::entities::attachment::Model, ApiError> {
    viewed_attachment(
        &state.db,
        &state.access_records,
        state.limits.client_address(request).to_string(),
        principal,
        id,
        what,
    )
    .await
}

#[OpenApi(prefix_path = "/v1", tag = "Tag::Attachments")]
impl AttachmentsApi {
    /// Upload a photo (JPEG, PNG) or PDF in one request. The type is decided
    /// from the bytes; the name and declared type are not trusted.
    #[oai(
        path = "/attachments",
        method = "post",
        operation_id = "uploadAttachment"
    )]
    async fn upload(
        &self,
        auth: BearerAuth,
        state: poem::web::Data<&AppState>,
        form: FileUpload,
    ) -> Result<AttachmentCreated, UploadProblems> {
        state.limits.check_upload(auth.0.user_id)?;
        let mut form = form;
        loop {
            let field = form
                .next_field()
                .await?
                .ok_or_else(|| ApiError::Validation("the form has no part named `file`".into()))?;
            if field.name() != Some("file") {
                // Other parts (an app's metadata, say) are read past, bounded.
                continue;
            }
            let file_name = field.file_name().map(str::to_owned);
            let bytes = tokio_util::io::StreamReader::new(futures_util::TryStreamExt::map_err(
                field,
                std::io::Error::other,
            ));
            let stored = state
                .uploads
                .receive(auth.0.user_id, file_name.as_deref(), bytes)
                .await?;
            let location = format!("/v1/attachments/{}", stored.id);
            return Ok(AttachmentCreated::Created(Json(stored.into()), location));
        }
    }

    /// The bytes of an attachment, for its uploader and for officials of an
    /// agency with a case that uses it.
    #[oai(
        path = "/attachments/:id",
        method = "get",
        operation_id = "getAttachment"
    )]
    // One parameter per header, path and body the operation reads.
    #[allow(clippy::too_many_arguments)]
    async fn download(
        &self,
        auth: BearerAuth,
        request: &poem::Request,
        state: poem::web::Data<&AppState>,
        id: Path<Uuid>,
        #[oai(name = "If-None-Match")] if_none_match: Header<Option<String>>,
        #[oai(name = "Range")] range: Header<Option<String>>,
        #[oai(name = "If-Range")] if_range: Header<Option<String>>,
    ) -> Result<AttachmentContent, DownloadProblems> {
        let found = look(&state, request, &auth.0, id.0, "attachment.viewed").await?;
        let etag = format!("\"{}\"", found.sha256);
        if etag_matches(if_none_match.0.as_deref(), &etag) {
            return Ok(AttachmentContent::NotModified(etag));
        }
        let size = found.byte_size as u64;
        let wanted = match wanted_range(range.0.as_deref(), if_range.0.as_deref(), &etag, size) {
            Ok(wanted) => wanted,
            Err(problem) => {
                return Ok(AttachmentContent::RangeNotSatisfiable(
                    problem,
                    format!("bytes */{size}"),
                ))
            }
        };
        if let Some(part) = wanted {
            let reader = state
                .uploads
                .media()
                .open_range(&found.storage_key, part.clone())
                .await
                .map_err(ApiError::Storage)?;
            return Ok(AttachmentContent::Partial(
                StoredFile::new(&found.media_type, Body::from_async_read(reader))?,
                part.end - part.start,
                format!("bytes {}-{}/{size}", part.start, part.end - 1),
                etag,
                "private, max-age=3600".into(),
                "bytes".into(),
            ));
        }
        let (reader, size) = state
            .uploads
            .media()
            .open(&found.storage_key)
            .await
            .map_err(ApiError::Storage)?;
        let body = Body::from_async_read(reader);
        let ascii_name: String = found
            .file_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || ".-_ ".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Ok(AttachmentContent::Ok(
            StoredFile::new(&found.media_type, body)?,
            size,
            etag,
            "private, max-age=3600".into(),
            format!("inline; filename=\"{ascii_name}\""),
            "nosniff".into(),
            "bytes".into(),
        ))
    }

    /// A small upright JPEG of a photo, for the officials' tablets; the
    /// same people may see it as the photo. Made in the background after
    /// the upload: until it is ready the answer is 202 with `Retry-After`.
    /// PDFs, and photos too large to decode safely, have none (404).
    #[oai(
        path = "/attachments/:id/thumbnail",
        method = "get",
        operation_id = "getAttachmentThumbnail"
    )]
    async fn thumbnail(
        &self,
        auth: BearerAuth,
        request: &poem::Request,
        state: poem::web::Data<&AppState>,
        id: Path<Uuid>,
        #[oai(name = "If-None-Match")] if_none_match: Header<Option<String>>,
    ) -> Result<ThumbnailContent, DownloadProblems> {
        let found = look(&state, request, &auth.0, id.0, "thumbnail.viewed").await?;
        let pending = || {
            ThumbnailContent::Pending(
                Json(ThumbnailPending {
                    status: thumbnails::PENDING.into(),
                }),
                1,
            )
        };
        let Some(row) = attachment_thumbnail::Entity::find_by_id(found.id)
            .one(&state.db)
            .await?
        else {
            // A photo from before thumbnails existed: made now.
            return match state
                .uploads
                .thumbnails()
                .ensure_row(&found)
                .await?
                .as_str()
            {
                thumbnails::PENDING => Ok(pending()),
                _ => Err(ApiError::NotFound("thumbnail: PDF documents have none").into()),
            };
        };
        match (row.state.as_str(), row.storage_key, row.sha256) {
            (thumbnails::READY, Some(key), Some(sha256)) => {
                let etag = format!("\"{sha256}\"");
                if etag_matches(if_none_match.0.as_deref(), &etag) {
                    return Ok(ThumbnailContent::NotModified(etag));
                }
                let (reader, size) = state
                    .uploads
                    .media()
                    .open(&key)
                    .await
                    .map_err(ApiError::Storage)?;
                Ok(ThumbnailContent::Ok(
                    Binary(Body::from_async_read(reader)),
                    size,
                    etag,
                    "private, max-age=86400".into(),
                ))
            }
            (thumbnails::PENDING, _, _) => Ok(pending()),
            _ => Err(ApiError::NotFound(
                "thumbnail: this attachment has none (a PDF, or a photo too large to shrink); open the file itself",
            )
            .into()),
        }
    }
}
