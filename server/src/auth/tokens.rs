use std::time::Duration;

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use onestop_model::entities::user;
use onestop_model::Role;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Principal;
use crate::settings::Settings;

/// The only algorithm accepted: a token naming any other, `none`
/// included, is refused before its signature is looked at.
const ALGORITHM: Algorithm = Algorithm::HS256;
const ACCESS: &str = "access";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    org: Option<String>,
    /// The sign-in (refresh token family) the token belongs to.
    sid: Uuid,
    /// Token type, so a token of another kind can never pass as access.
    typ: String,
    iss: String,
    aud: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: Uuid,
}

/// Signs and checks access tokens.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    citizen_ttl: Duration,
    official_ttl: Duration,
}

impl TokenKeys {
    pub fn from_settings(settings: &Settings) -> Self {
        let secret = settings.auth_signing_key.clone().unwrap_or_else(|| {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            SecretString::from(hex::encode(bytes))
        });
        let key = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(ALGORITHM);
        validation.algorithms = vec![ALGORITHM];
        validation.set_issuer(&[&settings.auth_issuer]);
        validation.set_audience(&[&settings.auth_audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        TokenKeys {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            issuer: settings.auth_issuer.clone(),
            audience: settings.auth_audience.clone(),
            citizen_ttl: Duration::from_secs(settings.access_token_ttl_secs),
            official_ttl: Duration::from_secs(settings.official_access_token_ttl_secs),
        }
    }

    /// A signed access token for `user` and how long it lives.
    pub fn issue(&self, user: &user::Model, session_id: Uuid) -> (String, Duration) {
        let ttl = match user.role {
            Role::Official => self.official_ttl,
            Role::Applicant | Role::OrganisationMember => self.citizen_ttl,
        };
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user.id,
            role: user.role,
            agency: user.agency_id.clone(),
            org: user.organisation_id.clone(),
            sid: session_id,
            typ: ACCESS.to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs() as i64,
            jti: Uuid::new_v4(),
        };
        let token = jsonwebtoken::encode(&Header::new(ALGORITHM), &claims, &self.encoding)
            .expect("HS256 signing cannot fail");
        (token, ttl)
    }

    /// The caller an access token speaks for, if it is valid.
    pub fn verify(&self, token: &str) -> Option<Principal> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        let claims = data.claims;
        if claims.typ != ACCESS {
            return None;
        }
        Some(Principal {
            user_id: claims.sub,
            role: claims.role,
            agency_id: claims.agency,
            organisation_id: claims.org,
            session_id: claims.sid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn user(role: Role) -> user::Model {
        user::Model {
            id: Uuid::new_v4(),
            username: "mother1".into(),
            password_hash: String::new(),
            role,
            display_name: "Someone".into(),
            locale: "ko".into(),
            region: None,
            agency_id: None,
            organisation_id: None,
            rrn_index: None,
            rrn_ciphertext: None,
            disabled: false,
            created_at: Utc::now(),
        }
    }

    fn keys() -> TokenKeys {
        TokenKeys::from_settings(&Settings {
            auth_signing_key: Some(SecretString::from("k".repeat(40))),
            ..Settings::default()
        })
    }

    #[test]
    fn an_issued_token_verifies_and_officials_get_shorter_ones() {
        let keys = keys();
        let mother = user(Role::Applicant);
        let (token, citizen_ttl) = keys.issue(&mother, Uuid::new_v4());
        assert_eq!(keys.verify(&token).unwrap().user_id, mother.id);
        let (_, official_ttl) = keys.issue(&user(Role::Official), Uuid::new_v4());
        assert!(official_ttl < citizen_ttl);
    }

    #[test]
    fn a_token_signed_with_another_key_or_alg_none_is_refused() {
        let (token, _) = keys().issue(&user(Role::Applicant), Uuid::new_v4());
        let other = TokenKeys::from_settings(&Settings {
            auth_signing_key: Some(SecretString::from("x".repeat(40))),
            ..Settings::default()
        });
        assert!(other.verify(&token).is_none());

        let payload = token.split('.').nth(1).unwrap();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"alg":"none","typ":"JWT"}"#);
        assert!(keys().verify(&format!("{header}.{payload}.")).is_none());
    }
}
