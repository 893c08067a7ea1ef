use onestop_model::catalog::{localised_name, pick_localised, FormField};
use onestop_model::entities::{agency, form, service};
use poem::Request;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use sea_orm::prelude::*;
use sea_orm::QueryOrder;

use super::{reader_locale, NamedRef, Tag};
use crate::problems;
use crate::state::AppState;

pub struct CatalogApi;

#[derive(Object)]
pub struct DocumentRef {
    pub code: String,
    pub name: String,
}

#[derive(Object)]
pub struct ServiceView {
    pub code: String,
    /// The bundle the service belongs to, e.g. `childbirth`.
    pub bundle: String,
    pub name: String,
    pub description: String,
    /// The kind of agency that grants it; the office is chosen from where
    /// the applicant is registered.
    pub agency_kind: String,
    /// Documents to attach unless the facts are shared with consent.
    pub required_documents: Vec<DocumentRef>,
}

#[derive(Object)]
pub struct FormFieldView {
    pub name: String,
    /// `integer`, `text` or `date` (YYYY-MM-DD).
    pub kind: String,
    pub required: bool,
}

#[derive(Object)]
pub struct FormView {
    pub code: String,
    pub name: String,
    pub agency_kind: String,
    pub fields: Vec<FormFieldView>,
    /// Photos or PDF pages a filing needs at least.
    pub min_pages: i32,
    /// Offices the form can be filed to.
    pub offices: Vec<NamedRef>,
}

#[derive(ApiResponse)]
pub enum ServicesResponse {
    #[oai(status = 200)]
    Ok(Json<Vec<ServiceView>>),
}

#[derive(ApiResponse)]
pub enum FormsResponse {
    #[oai(status = 200)]
    Ok(Json<Vec<FormView>>),
}

problems!(pub CatalogProblems { BadRequest = 400 });

#[OpenApi(prefix_path = "/v1", tag = "Tag::Catalog")]
impl CatalogApi {
    /// Services that can be applied for, in the reader's language.
    #[oai(
        path = "/catalog/services",
        method = "get",
        operation_id = "listServices"
    )]
    async fn services(
        &self,
        request: &Request,
        state: poem::web::Data<&AppState>,
        /// Only the services of this bundle.
        bundle: Query<Option<String>>,
    ) -> Result<ServicesResponse, CatalogProblems> {
        let locale = reader_locale(request, None);
        let mut query = service::Entity::find()
            .filter(service::Column::Active.eq(true))
            .order_by_asc(service::Column::Position);
        if let Some(bundle) = &bundle.0 {
            query = query.filter(service::Column::Bundle.eq(bundle.as_str()));
        }
        let documents = &state.catalog.documents;
        let services = query
            .all(&state.reads)
            .await?
            .into_iter()
            .map(|s| ServiceView {
                required_documents: serde_json::from_value::<Vec<String>>(s.required_documents)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|code| DocumentRef {
                        name: documents
                            .get(&code)
                            .map(|doc| pick_localised(&doc.names, locale))
                            .unwrap_or_else(|| code.clone()),
                        code,
                    })
                    .collect(),
                name: localised_name(&s.names, locale),
                description: localised_name(&s.descriptions, locale),
                code: s.code,
                bundle: s.bundle,
                agency_kind: s.agency_kind,
            })
            .collect();
        Ok(ServicesResponse::Ok(Json(services)))
    }

    /// Standard forms organisations file, with the offices that take them.
    #[oai(path = "/catalog/forms", method = "get", operation_id = "listForms")]
    async fn forms(
        &self,
        request: &Request,
        state: poem::web::Data<&AppState>,
    ) -> Result<FormsResponse, CatalogProblems> {
        let locale = reader_locale(request, None);
        let forms = form::Entity::find()
            .filter(form::Column::Active.eq(true))
            .order_by_asc(form::Column::Code)
            .all(&state.reads)
            .await?;
        let agencies = agency::Entity::find()
            .order_by_asc(agency::Column::Id)
            .all(&state.reads)
            .await?;
        let views = forms
            .into_iter()
            .map(|f| FormView {
                name: localised_name(&f.names, locale),
                offices: agencies
                    .iter()
                    .filter(|a| a.kind == f.agency_kind)
                    .map(|a| NamedRef::new(&a.id, &a.names, locale))
                    .collect(),
                fields: serde_json::from_value::<Vec<FormField>>(f.fields)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|field| FormFieldView {
                        name: field.name,
                        kind: field.kind,
                        required: field.required,
                    })
                    .collect(),
                code: f.code,
                agency_kind: f.agency_kind,
                min_pages: f.min_pages,
            })
            .collect();
        Ok(FormsResponse::Ok(Json(views)))
    }
}
