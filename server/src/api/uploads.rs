//! Resumable uploads for weak phone networks: the tus 1.0 core protocol
//! (<https://tus.io/protocols/resumable-upload>) with the creation,
//! checksum, termination and expiration extensions, so the official
//! TUSKit (iOS) and tus-android-client work unchanged. The protocol work
//! is in [`crate::uploads::tus`]; this file maps it to HTTP.

use poem::http::{header, HeaderValue, Method, StatusCode};
use poem::{Body, Endpoint, IntoResponse, Middleware, Request, RequestBody, Response};
use poem_openapi::param::{Header, Path};
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, Enum, ExtractParamOptions, Object, OpenApi,
};
use sea_orm::prelude::DateTimeUtc;
use uuid::Uuid;

use super::Tag;
use crate::auth::BearerAuth;
use crate::error::{framework_error_to_problem, ApiError, Problem, ProblemJson};
use crate::problems;
use crate::state::AppState;
use crate::uploads::tus::{self, http_date, Checksum, Progress, TUS_VERSION};

pub struct UploadsApi;

const CHUNK_TYPE: &str = "application/offset+octet-stream";

/// Request headers of the protocol, for browsers' CORS checks.
pub const TUS_REQUEST_HEADERS: [&str; 7] = [
    "tus-resumable",
    "upload-length",
    "upload-defer-length",
    "upload-metadata",
    "upload-offset",
    "upload-checksum",
    "x-http-method-override",
];
/// Response headers of the protocol a browser client must be able to read.
pub const TUS_RESPONSE_HEADERS: [&str; 10] = [
    "tus-resumable",
    "tus-version",
    "tus-extension",
    "tus-max-size",
    "tus-checksum-algorithm",
    "upload-offset",
    "upload-length",
    "upload-metadata",
    "upload-expires",
    "upload-attachment-id",
];

/// The protocol version a request speaks, `Tus-Resumable`. Every request
/// but OPTIONS and GET must send it; another version, or none, gets 412
/// with `Tus-Version` (tus 1.0.0 says so) before anything else is read.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TusResumable {
    #[oai(rename = "1.0.0")]
    V1_0_0,
}

/// A PATCH body, `application/offset+octet-stream`, read as a stream.
pub struct Chunk {
    body: Body,
    length: Option<u64>,
}

impl<'a> ApiExtractor<'a> for Chunk {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(_registry: &mut Registry) {}

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: Some("The next bytes of the file, starting at `Upload-Offset`."),
            content: vec![MetaMediaType {
                content_type: CHUNK_TYPE,
                schema: MetaSchemaRef::Inline(Box::new(MetaSchema {
                    format: Some("binary"),
                    ..MetaSchema::new("string")
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
        let is_chunk = request.content_type().is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(CHUNK_TYPE))
        });
        if !is_chunk {
            let problem = Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                Some(format!("send the bytes with Content-Type: {CHUNK_TYPE}")),
            );
            return Err(poem::Error::from_response(
                ProblemJson(problem).into_response(),
            ));
        }
        let length = request
            .header(header::CONTENT_LENGTH)
            .and_then(|v| v.trim().parse().ok());
        Ok(Chunk {
            body: body.take()?,
            length,
        })
    }
}

#[derive(ApiResponse)]
pub enum Discovery {
    /// What this server supports.
    #[oai(status = 204)]
    Supported(
        #[oai(header = "Tus-Version")] String,
        #[oai(header = "Tus-Extension")] String,
        /// Largest file, in bytes.
        #[oai(header = "Tus-Max-Size")]
        u64,
        #[oai(header = "Tus-Checksum-Algorithm")] String,
    ),
}

#[derive(ApiResponse)]
pub enum UploadCreated {
    /// The upload exists; send its bytes with PATCH to `Location`.
    #[oai(status = 201)]
    Created(
        #[oai(header = "Location")] String,
        #[oai(header = "Upload-Offset")] u64,
        /// When the upload is deleted if no bytes arrive before.
        #[oai(header = "Upload-Expires")]
        String,
    ),
}

#[derive(ApiResponse)]
pub enum ChunkStored {
    /// The bytes are stored. When `Upload-Offset` equals the length, the
    /// file has become the attachment named by `Upload-Attachment-Id`.
    #[oai(status = 204)]
    Stored(
        #[oai(header = "Upload-Offset")] u64,
        #[oai(header = "Upload-Expires")] Option<String>,
        #[oai(header = "Upload-Attachment-Id")] Option<String>,
    ),
}

#[derive(ApiResponse)]
pub enum UploadHead {
    /// Where the upload stands; continue with PATCH at `Upload-Offset`.
    #[oai(status = 200)]
    Found(
        #[oai(header = "Upload-Offset")] u64,
        #[oai(header = "Upload-Length")] u64,
        #[oai(header = "Upload-Metadata")] Option<String>,
        #[oai(header = "Upload-Expires")] Option<String>,
        #[oai(header = "Upload-Attachment-Id")] Option<String>,
        #[oai(header = "Cache-Control")] String,
    ),
}

#[derive(ApiResponse)]
pub enum UploadTerminated {
    /// The upload and its bytes are gone (the attachment of a finished
    /// upload stays).
    #[oai(status = 204)]
    Terminated,
}

#[derive(Object)]
pub struct UploadView {
    pub id: Uuid,
    /// Bytes received and kept.
    pub offset: u64,
    pub length: u64,
    #[oai(skip_serializing_if_is_none)]
    pub file_name: Option<String>,
    /// Every byte arrived and the file became an attachment.
    pub complete: bool,
    /// The attachment, once complete: use it in a submission.
    #[oai(skip_serializing_if_is_none)]
    pub attachment_id: Option<Uuid>,
    /// When the upload (or, once complete, this record of it) is deleted.
    pub expires_at: DateTimeUtc,
}

problems!(pub CreateUploadProblems {
    BadRequest = 400, Unauthorized = 401, PreconditionFailed = 412, PayloadTooLarge = 413,
    UnsupportedMediaType = 415, UnprocessableEntity = 422, TooManyRequests = 429,
});
problems!(pub PatchUploadProblems {
    BadRequest = 400, Unauthorized = 401, NotFound = 404, Conflict = 409, PreconditionFailed = 412,
    PayloadTooLarge = 413, UnsupportedMediaType = 415, UnprocessableEntity = 422,
    ChecksumMismatch = 460,
});
problems!(pub UploadStateProblems {
    BadRequest = 400, Unauthorized = 401, NotFound = 404, PreconditionFailed = 412,
});
problems!(pub TerminateUploadProblems {
    BadRequest = 400, Unauthorized = 401, NotFound = 404, Conflict = 409, PreconditionFailed = 412,
});
problems!(pub UploadViewProblems { BadRequest = 400, Unauthorized = 401, NotFound = 404 });

/// Resumable uploads (tus 1.0.0). Every request but OPTIONS and GET must
/// send `Tus-Resumable: 1.0.0` (else 412 with `Tus-Version`); every
/// response carries `Tus-Resumable`. A client that cannot send PATCH or
/// DELETE may send POST with `X-HTTP-Method-Override`.
#[OpenApi(prefix_path = "/v1", tag = "Tag::Attachments")]
impl UploadsApi {
    /// What the resumable upload service supports (tus discovery). Needs
    /// no access token.
    #[oai(
        path = "/uploads",
        method = "options",
        operation_id = "discoverUploads"
    )]
    async fn discover(&self, state: poem::web::Data<&AppState>) -> Discovery {
        Discovery::Supported(
            TUS_VERSION.into(),
            tus::EXTENSIONS.into(),
            state.uploads.limits().max_upload_bytes,
            tus::CHECKSUM_ALGORITHMS.into(),
        )
    }

    /// Start a resumable upload of a photo or PDF of `Upload-Length`
    /// bytes; `Upload-Metadata` may carry `filename` (base64, as tus
    /// says). The bytes follow with PATCH to `Location`.
    #[oai(path = "/uploads", method = "post", operation_id = "createUpload")]
    async fn create(
        &self,
        auth: BearerAuth,
        state: poem::web::Data<&AppState>,
        #[oai(name = "Tus-Resumable")] _version: Header<TusResumable>,
        request: &Request,
        /// The file's size in bytes.
        #[oai(name = "Upload-Length", validator(minimum(value = "0")))]
        upload_length: Header<u64>,
        /// `key base64(value)` pairs, comma-separated, as tus defines them.
        #[oai(name = "Upload-Metadata")]
        metadata: Header<Option<String>>,
    ) -> Result<UploadCreated, CreateUploadProblems> {
        state.limits.check_upload(auth.0.user_id)?;
        // The creation-defer-length extension is not offered.
        if request.headers().contains_key("upload-defer-length") {
            return Err(ApiError::BadRequest(
                "Upload-Defer-Length is not supported; send Upload-Length".into(),
            )
            .into());
        }
        let upload = tus::create(
            &state.uploads,
            auth.0.user_id,
            upload_length.0,
            metadata.0.as_deref(),
        )
        .await?;
        Ok(UploadCreated::Created(
            format!("/v1/uploads/{}", upload.id),
            0,
            http_date(upload.expires_at),
        ))
    }

    /// Send the next bytes of an upload, starting at `Upload-Offset`
    /// (which must be where the upload stands, else 409). With
    /// `Upload-Checksum` (`sha1` or `sha256`, base64) a chunk that does not
    /// match is discarded (460). If the connection drops, the bytes that
    /// arrived are kept (unless a checksum was sent): ask with HEAD and
    /// continue. Only one request at a time may send to an upload; another
    /// gets 409. The request that completes the upload answers with
    /// `Upload-Attachment-Id`.
    #[oai(
        path = "/uploads/:id",
        method = "patch",
        operation_id = "sendUploadChunk"
    )]
    // One parameter per header, path and body the operation reads.
    #[allow(clippy::too_many_arguments)]
    async fn patch(
        &self,
        auth: BearerAuth,
        state: poem::web::Data<&AppState>,
        #[oai(name = "Tus-Resumable")] _version: Header<TusResumable>,
        id: Path<Uuid>,
        /// Where these bytes start: the upload's offset now.
        #[oai(name = "Upload-Offset", validator(minimum(value = "0")))]
        upload_offset: Header<u64>,
        /// `sha1` or `sha256`, a space, and the chunk's base64 digest.
        #[oai(
            name = "Upload-Checksum",
            validator(
                pattern = r"^([Ss][Hh][Aa]1 [A-Za-z0-9+/]{26}[AEIMQUYcgkosw048]=|[Ss][Hh][Aa]256 [A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=)$"
            )
        )]
        upload_checksum: Header<Option<String>>,
        chunk: Chunk,
    ) -> Result<ChunkStored, PatchUploadProblems> {
        let offset = upload_offset.0;
        let checksum = upload_checksum
            .0
            .as_deref()
            .map(Checksum::parse)
            .transpose()?;
        let progress = tus::patch(
            &state.uploads,
            auth.0.user_id,
            id.0,
            offset,
            checksum,
            chunk.length,
            tokio_util::io::StreamReader::new(Box::pin(chunk.body.into_bytes_stream())),
        )
        .await?;
        let Progress {
            offset,
            expires_at,
            attachment_id,
        } = progress;
        Ok(ChunkStored::Stored(
            offset,
            expires_at.map(http_date),
            attachment_id.map(|a| a.to_string()),
        ))
    }

    /// Where an upload stands: `Upload-Offset` is where to continue.
    #[oai(
        path = "/uploads/:id",
        method = "head",
        operation_id = "getUploadOffset"
    )]
    async fn head(
        &self,
        auth: BearerAuth,
        state: poem::web::Data<&AppState>,
        #[oai(name = "Tus-Resumable")] _version: Header<TusResumable>,
        id: Path<Uuid>,
    ) -> Result<UploadHead, UploadStateProblems> {
        let upload = tus::find(&state.uploads, auth.0.user_id, id.0).await?;
        let progress = Progress::of(&upload);
        Ok(UploadHead::Found(
            progress.offset,
            upload.upload_length as u64,
            upload.metadata,
            progress.expires_at.map(http_date),
            progress.attachment_id.map(|a| a.to_string()),
            "no-store".into(),
        ))
    }

    /// An upload as JSON, for apps: once `complete`, `attachment_id` is
    /// the attachment to use in a submission.
    #[oai(path = "/uploads/:id", method = "get", operation_id = "getUpload")]
    async fn view(
        &self,
        auth: BearerAuth,
        state: poem::web::Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<Json<UploadView>, UploadViewProblems> {
        let upload = tus::find(&state.uploads, auth.0.user_id, id.0).await?;
        Ok(Json(UploadView {
            id: upload.id,
            offset: upload.upload_offset as u64,
            length: upload.upload_length as u64,
            file_name: upload.file_name,
            complete: upload.attachment_id.is_some(),
            attachment_id: upload.attachment_id,
            expires_at: upload.expires_at,
        }))
    }

    /// Abandon an upload (tus termination): its bytes are deleted.
    #[oai(
        path = "/uploads/:id",
        method = "delete",
        operation_id = "terminateUpload"
    )]
    async fn terminate(
        &self,
        auth: BearerAuth,
        state: poem::web::Data<&AppState>,
        #[oai(name = "Tus-Resumable")] _version: Header<TusResumable>,
        id: Path<Uuid>,
    ) -> Result<UploadTerminated, TerminateUploadProblems> {
        tus::terminate(&state.uploads, auth.0.user_id, id.0).await?;
        Ok(UploadTerminated::Terminated)
    }
}

/// What the media routes need from the HTTP layer, around everything
/// else (it sits outside the response compression):
/// - on `/v1/uploads`: `X-HTTP-Method-Override`, the `Tus-Resumable`
///   version check (412 with `Tus-Version`), and `Tus-Resumable` on every
///   response, problems included;
/// - on `/v1/uploads` and `/v1/attachments`: no gzip of photos and PDFs
///   (they are compressed already, and a compressed body would lose its
///   `Content-Length` and break byte ranges).
pub struct MediaRoutes;

impl<E: Endpoint> Middleware<E> for MediaRoutes {
    type Output = MediaRoutesEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        MediaRoutesEndpoint { inner }
    }
}

pub struct MediaRoutesEndpoint<E> {
    inner: E,
}

fn is_tus_path(path: &str) -> bool {
    path == "/v1/uploads" || path.starts_with("/v1/uploads/")
}

/// Whether a request is one of the protocol's: creating an upload, or
/// sending to, asking about or ending one.
fn speaks_tus(method: &Method, path: &str) -> bool {
    let one_upload = path
        .strip_prefix("/v1/uploads/")
        .is_some_and(|id| !id.is_empty() && !id.contains('/'));
    match *method {
        Method::POST => path == "/v1/uploads",
        Method::PATCH | Method::HEAD | Method::DELETE => one_upload,
        _ => false,
    }
}

impl<E: Endpoint> Endpoint for MediaRoutesEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut request: Request) -> poem::Result<Response> {
        let path = request.uri().path();
        let tus = is_tus_path(path);
        if tus || path.starts_with("/v1/attachments") {
            request.headers_mut().remove(header::ACCEPT_ENCODING);
        }
        if !tus {
            return self
                .inner
                .call(request)
                .await
                .map(IntoResponse::into_response);
        }
        if request.method() == Method::POST {
            let overridden = request
                .header("x-http-method-override")
                .and_then(|m| Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()).ok());
            if let Some(method) = overridden {
                request.set_method(method);
            }
        }
        // Only the protocol's own requests are held to its version: a
        // method the address does not serve still gets 405, and a request
        // without credentials 401, whatever it says about tus.
        let versioned = speaks_tus(request.method(), request.uri().path())
            && request.headers().contains_key(header::AUTHORIZATION);
        let version = request.header("tus-resumable").map(str::trim);
        let mut response = if versioned && version != Some(TUS_VERSION) {
            let detail = match version {
                Some(v) => {
                    format!("tus version {v} is not supported; this server speaks {TUS_VERSION}")
                }
                None => format!("send Tus-Resumable: {TUS_VERSION}"),
            };
            let mut response = ProblemJson(Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "tus-version-unsupported",
                Some(detail),
            ))
            .into_response();
            response
                .headers_mut()
                .insert("tus-version", HeaderValue::from_static(TUS_VERSION));
            response
        } else {
            match self.inner.call(request).await {
                Ok(response) => response.into_response(),
                Err(error) => framework_error_to_problem(error),
            }
        };
        response
            .headers_mut()
            .insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
        Ok(response)
    }
}
