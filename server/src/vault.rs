//! Envelope encryption of personal identifiers. Each value is sealed with
//! AES-256-GCM under a data key; data keys are stored only wrapped by the
//! key-encrypting key (KEK), which never enters the database (it comes from
//! configuration or, for the embedded default, a key file). Each ciphertext
//! names its data key, so keys can rotate while old values still open.

use std::collections::HashMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use chrono::Utc;
use onestop_model::entities::{data_key, user};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sea_orm::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, QueryOrder};
use secrecy::{ExposeSecret, SecretBox};
use tokio::sync::Mutex;

const FORMAT: &str = "v1";

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("database: {0}")]
    Database(#[from] DbErr),
    #[error("a ciphertext is malformed")]
    Malformed,
    #[error("data key {0} is unknown")]
    UnknownKey(String),
    #[error("no configured key-encrypting key is {0}; set RRN_KEK_PREVIOUS to open it")]
    UnknownKek(String),
    #[error("a value failed authentication: it was altered or belongs to another row")]
    Tampered,
    #[error("the key-encrypting key is invalid: {0}")]
    BadKek(String),
}

struct Kek {
    id: String,
    key: LessSafeKey,
}

impl Kek {
    fn from_hex(id: &str, hex_key: &str) -> Result<Self, VaultError> {
        let bytes = hex::decode(hex_key.trim())
            .map_err(|_| VaultError::BadKek("not hexadecimal".into()))?;
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| VaultError::BadKek("must be 32 bytes (64 hex digits)".into()))?;
        Ok(Kek {
            id: id.to_owned(),
            key: LessSafeKey::new(unbound),
        })
    }
}

pub struct Vault {
    current: Kek,
    previous: Option<Kek>,
    rng: SystemRandom,
    /// Unwrapped data keys by id, so each is unwrapped once per process.
    data_keys: Mutex<HashMap<String, SecretBox<[u8; 32]>>>,
}

fn seal(key: &LessSafeKey, rng: &SystemRandom, plaintext: &[u8], aad: &[u8]) -> String {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce)
        .expect("the system random source works");
    let mut buffer = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut buffer,
    )
    .expect("sealing a short value cannot fail");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buffer);
    STANDARD_NO_PAD.encode(out)
}

fn open(key: &LessSafeKey, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, VaultError> {
    let bytes = STANDARD_NO_PAD
        .decode(sealed)
        .map_err(|_| VaultError::Malformed)?;
    if bytes.len() < NONCE_LEN {
        return Err(VaultError::Malformed);
    }
    let (nonce, rest) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| VaultError::Malformed)?;
    let mut buffer = rest.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(aad), &mut buffer)
        .map_err(|_| VaultError::Tampered)?;
    Ok(plain.to_vec())
}

fn aead_key(bytes: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key"))
}

impl Vault {
    /// `current` (and `previous` during a KEK rotation) as `(id, hex key)`.
    pub fn new(current: (&str, &str), previous: Option<(&str, &str)>) -> Result<Self, VaultError> {
        Ok(Vault {
            current: Kek::from_hex(current.0, current.1)?,
            previous: previous
                .map(|(id, key)| Kek::from_hex(id, key))
                .transpose()?,
            rng: SystemRandom::new(),
            data_keys: Mutex::new(HashMap::new()),
        })
    }

    /// The embedded default: a KEK in a file outside the database, made on
    /// first start.
    pub fn from_key_file(id: &str, path: &Path) -> Result<Self, VaultError> {
        let hex_key = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut key)
                    .expect("the system random source works");
                let text = hex::encode(key);
                crate::identity::write_key_file(path, text.as_bytes()).map_err(|e| {
                    VaultError::BadKek(format!("cannot write {}: {e}", path.display()))
                })?;
                text
            }
            Err(error) => {
                return Err(VaultError::BadKek(format!(
                    "cannot read {}: {error}",
                    path.display()
                )))
            }
        };
        Self::new((id, &hex_key), None)
    }

    fn kek(&self, id: &str) -> Result<&Kek, VaultError> {
        if self.current.id == id {
            return Ok(&self.current);
        }
        self.previous
            .as_ref()
            .filter(|kek| kek.id == id)
            .ok_or_else(|| VaultError::UnknownKek(id.to_owned()))
    }

    async fn data_key(
        &self,
        db: &impl ConnectionTrait,
        key_id: &str,
    ) -> Result<[u8; 32], VaultError> {
        if let Some(key) = self.data_keys.lock().await.get(key_id) {
            return Ok(*key.expose_secret());
        }
        let row = data_key::Entity::find_by_id(key_id.to_owned())
            .one(db)
            .await?
            .ok_or_else(|| VaultError::UnknownKey(key_id.to_owned()))?;
        let kek = self.kek(&row.kek_id)?;
        let bytes: [u8; 32] = open(&kek.key, &row.wrapped_key, row.key_id.as_bytes())?
            .try_into()
            .map_err(|_| VaultError::Malformed)?;
        self.data_keys
            .lock()
            .await
            .insert(key_id.to_owned(), SecretBox::new(Box::new(bytes)));
        Ok(bytes)
    }

    /// Makes a new data key, wrapped by the current KEK, and makes it the
    /// one new values are sealed with.
    async fn new_active_key(&self, db: &impl ConnectionTrait) -> Result<String, VaultError> {
        let mut bytes = [0u8; 32];
        self.rng
            .fill(&mut bytes)
            .expect("the system random source works");
        let key_id = format!("dk-{}", Uuid::now_v7().simple());
        data_key::Entity::update_many()
            .col_expr(data_key::Column::Active, Expr::value(false))
            .exec(db)
            .await?;
        data_key::ActiveModel {
            key_id: Set(key_id.clone()),
            kek_id: Set(self.current.id.clone()),
            wrapped_key: Set(seal(
                &self.current.key,
                &self.rng,
                &bytes,
                key_id.as_bytes(),
            )),
            active: Set(true),
            created_at: Set(Utc::now()),
        }
        .insert(db)
        .await?;
        self.data_keys
            .lock()
            .await
            .insert(key_id.clone(), SecretBox::new(Box::new(bytes)));
        Ok(key_id)
    }

    async fn active_key_id(&self, db: &impl ConnectionTrait) -> Result<String, VaultError> {
        match data_key::Entity::find()
            .filter(data_key::Column::Active.eq(true))
            .order_by_desc(data_key::Column::CreatedAt)
            .one(db)
            .await?
        {
            Some(row) => Ok(row.key_id),
            None => self.new_active_key(db).await,
        }
    }

    /// Seals `plaintext`, bound to `context` (e.g. the row's id) so a
    /// ciphertext copied to another row does not open.
    pub async fn encrypt(
        &self,
        db: &impl ConnectionTrait,
        plaintext: &str,
        context: &[u8],
    ) -> Result<String, VaultError> {
        let key_id = self.active_key_id(db).await?;
        let key = aead_key(&self.data_key(db, &key_id).await?);
        Ok(format!(
            "{FORMAT}.{key_id}.{}",
            seal(&key, &self.rng, plaintext.as_bytes(), context)
        ))
    }

    pub async fn decrypt(
        &self,
        db: &impl ConnectionTrait,
        ciphertext: &str,
        context: &[u8],
    ) -> Result<String, VaultError> {
        let mut parts = ciphertext.splitn(3, '.');
        let (Some(FORMAT), Some(key_id), Some(sealed)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(VaultError::Malformed);
        };
        let key = aead_key(&self.data_key(db, key_id).await?);
        String::from_utf8(open(&key, sealed, context)?).map_err(|_| VaultError::Malformed)
    }

    /// Rotates keys: a new data key becomes active, every data key is
    /// re-wrapped by the current KEK (so a previous KEK can be retired), and
    /// every stored number is re-encrypted under the new data key; data
    /// keys no value uses any more are deleted. Returns how many values
    /// were re-encrypted.
    pub async fn rotate(&self, db: &DatabaseConnection) -> Result<u64, VaultError> {
        let txn = onestop_model::begin_write(db).await?;
        for row in data_key::Entity::find().all(&txn).await? {
            let bytes = self.data_key(&txn, &row.key_id).await?;
            data_key::Entity::update_many()
                .col_expr(
                    data_key::Column::KekId,
                    Expr::value(self.current.id.clone()),
                )
                .col_expr(
                    data_key::Column::WrappedKey,
                    Expr::value(seal(
                        &self.current.key,
                        &self.rng,
                        &bytes,
                        row.key_id.as_bytes(),
                    )),
                )
                .filter(data_key::Column::KeyId.eq(row.key_id.clone()))
                .exec(&txn)
                .await?;
        }
        let new_key = self.new_active_key(&txn).await?;
        let mut count = 0;
        for person in user::Entity::find()
            .filter(user::Column::RrnCiphertext.is_not_null())
            .all(&txn)
            .await?
        {
            let Some(old) = &person.rrn_ciphertext else {
                continue;
            };
            let context = person.id.as_bytes().to_vec();
            let plain = self.decrypt(&txn, old, &context).await?;
            let fresh = self.encrypt(&txn, &plain, &context).await?;
            user::Entity::update_many()
                .col_expr(user::Column::RrnCiphertext, Expr::value(fresh))
                .filter(user::Column::Id.eq(person.id))
                .exec(&txn)
                .await?;
            count += 1;
        }
        data_key::Entity::delete_many()
            .filter(data_key::Column::KeyId.ne(new_key))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        self.data_keys.lock().await.clear();
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let rng = SystemRandom::new();
        let key = aead_key(&[7; 32]);
        let sealed = seal(&key, &rng, b"900101-2345678", b"row-1");
        assert!(!sealed.contains("900101"));
        assert_eq!(open(&key, &sealed, b"row-1").unwrap(), b"900101-2345678");
        assert!(matches!(
            open(&key, &sealed, b"row-2"),
            Err(VaultError::Tampered)
        ));
        assert!(matches!(
            open(&aead_key(&[8; 32]), &sealed, b"row-1"),
            Err(VaultError::Tampered)
        ));
        // The same value sealed twice looks different.
        assert_ne!(sealed, seal(&key, &rng, b"900101-2345678", b"row-1"));
    }
}
