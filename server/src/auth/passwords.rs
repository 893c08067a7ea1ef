use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::error::ApiError;

/// A hash no password matches, verified when the account does not exist so
/// that a wrong username costs as long as a wrong password.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3o9B4CW8lrbnGMs/JzJqyHAzFk3Lq0qf3fJzGbXdmOc";

/// Argon2id with the crate's defaults (OWASP's minimum: 19 MiB, 2 passes).
/// Runs on the blocking pool: it is meant to be slow.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| ApiError::Internal(format!("hashing a password failed: {e}")))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("hashing task failed: {e}")))?
}

/// Whether `password` matches `hash`; `None` checks against a decoy.
pub async fn verify_password(password: String, hash: Option<String>) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DECOY_HASH.to_owned());
        let parsed = PasswordHash::new(&hash)
            .map_err(|e| ApiError::Internal(format!("a stored password hash is malformed: {e}")))?;
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(known && matches)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("verifying task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_right_password_matches_and_others_do_not() {
        let hash = hash_password("onestop-demo".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("onestop-demo".into(), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!verify_password("onestop-dem0".into(), Some(hash))
            .await
            .unwrap());
        assert!(!verify_password("anything".into(), None).await.unwrap());
    }
}
