//! Per-client request budgets (governor's GCRA): sign-in per client
//! address, uploads per account. Over budget is a 429 with `Retry-After`.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use poem::Request;
use uuid::Uuid;

use crate::client_address::ClientAddresses;
use crate::error::ApiError;
use crate::settings::Settings;

pub struct RateLimits {
    sign_in: DefaultKeyedRateLimiter<IpAddr>,
    sign_in_account: DefaultKeyedRateLimiter<String>,
    uploads: DefaultKeyedRateLimiter<Uuid>,
    clock: DefaultClock,
    addresses: ClientAddresses,
}

fn quota(per_minute: u32, burst: u32) -> Quota {
    let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(burst)
}

impl RateLimits {
    pub fn from_settings(settings: &Settings) -> Self {
        RateLimits {
            sign_in: RateLimiter::keyed(quota(
                settings.token_rate_per_minute,
                settings.token_burst,
            )),
            sign_in_account: RateLimiter::keyed(quota(
                settings.account_sign_in_per_minute,
                settings.account_sign_in_burst,
            )),
            uploads: RateLimiter::keyed(quota(
                settings.upload_rate_per_minute,
                settings.upload_burst,
            )),
            clock: DefaultClock::default(),
            addresses: ClientAddresses::from_settings(settings),
        }
    }

    /// The address the request came from ([`ClientAddresses`]): the
    /// key of the sign-in budget and the address in access records.
    pub fn client_address(&self, request: &Request) -> IpAddr {
        self.addresses.of(request)
    }

    pub fn check_sign_in(&self, request: &Request) -> Result<(), ApiError> {
        let key = self.client_address(request);
        self.sign_in.check_key(&key).map_err(|not_until| {
            metrics::counter!("rate_limited_total", "budget" => "sign_in").increment(1);
            ApiError::RateLimited {
                retry_after: not_until.wait_time_from(self.clock.now()),
            }
        })
    }

    /// Attempts on one account from anywhere: slows a distributed guess of
    /// one mother's password; the budget refills, so she is never locked
    /// out for good.
    pub fn check_sign_in_account(&self, username: &str) -> Result<(), ApiError> {
        let key = username.trim().to_lowercase();
        self.sign_in_account.check_key(&key).map_err(|not_until| {
            metrics::counter!("rate_limited_total", "budget" => "sign_in_account").increment(1);
            ApiError::RateLimited {
                retry_after: not_until.wait_time_from(self.clock.now()),
            }
        })
    }

    pub fn check_upload(&self, user_id: Uuid) -> Result<(), ApiError> {
        self.uploads.check_key(&user_id).map_err(|not_until| {
            metrics::counter!("rate_limited_total", "budget" => "upload").increment(1);
            ApiError::RateLimited {
                retry_after: not_until.wait_time_from(self.clock.now()),
            }
        })
    }

    /// Forgets clients whose budget is full again, so memory stays bounded.
    pub fn forget_idle_clients(&self) {
        self.sign_in.retain_recent();
        self.sign_in_account.retain_recent();
        self.sign_in_account.shrink_to_fit();
        self.uploads.retain_recent();
        self.sign_in.shrink_to_fit();
        self.uploads.shrink_to_fit();
    }
}
