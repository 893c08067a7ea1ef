//! The address a request came from, as rate limits and access records
//! see it.
//!
//! Without `TRUST_FORWARDED_FOR` it is the connection's peer. With it, and
//! only when the peer is one of `TRUSTED_PROXIES`, `X-Forwarded-For` is
//! read from the right: each proxy appends the address it saw, so the
//! rightmost entry that is not a trusted proxy is the last address no
//! trusted hop could have been lied to about. Everything to its left was
//! written by the client and is never used.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;
use poem::Request;

#[derive(Clone, Debug, Default)]
pub struct ClientAddresses {
    /// Empty: forwarded addresses are not trusted at all.
    proxies: Vec<IpNet>,
}

impl ClientAddresses {
    /// Trusts `X-Forwarded-For` from `proxies` (none: the peer is always
    /// the client).
    pub fn new(proxies: Vec<IpNet>) -> Self {
        ClientAddresses { proxies }
    }

    pub fn from_settings(settings: &crate::settings::Settings) -> Self {
        if !settings.trust_forwarded_for {
            return ClientAddresses::default();
        }
        // Validated at start.
        ClientAddresses::new(settings.trusted_proxy_networks().unwrap_or_default())
    }

    fn is_proxy(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.proxies.iter().any(|net| net.contains(&address))
    }

    pub fn of(&self, request: &Request) -> IpAddr {
        let peer = request
            .remote_addr()
            .as_socket_addr()
            .map(|addr| addr.ip().to_canonical())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let forwarded = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok());
        self.resolve(peer, forwarded)
    }

    /// The client behind `peer`, given the `X-Forwarded-For` field lines
    /// in the order they came.
    pub fn resolve<'a>(&self, peer: IpAddr, forwarded: impl Iterator<Item = &'a str>) -> IpAddr {
        if !self.is_proxy(peer) {
            return peer;
        }
        let entries: Vec<&str> = forwarded.flat_map(|line| line.split(',')).collect();
        let mut client = peer;
        for entry in entries.iter().rev() {
            match parse_entry(entry) {
                Some(address) if self.is_proxy(address) => client = address,
                Some(address) => return address,
                // A trusted proxy writes addresses; anything else came
                // from further left, where nothing is believed.
                None => return client,
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|socket| socket.ip()))
        .ok()
        .map(|address| address.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn behind(proxies: &str) -> ClientAddresses {
        ClientAddresses::new(
            proxies
                .split(',')
                .map(|p| p.trim().parse::<IpNet>().unwrap())
                .collect(),
        )
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_client() {
        let addresses = behind("10.0.0.0/8");
        // The client wrote 1.2.3.4 itself; the proxy appended what it saw.
        let header = ["1.2.3.4, 203.0.113.9"];
        assert_eq!(
            addresses.resolve(ip("10.0.0.2"), header.into_iter()),
            ip("203.0.113.9")
        );
        // Two proxies, each appending.
        let header = ["6.6.6.6", "203.0.113.9, 10.1.1.1"];
        assert_eq!(
            addresses.resolve(ip("10.0.0.2"), header.into_iter()),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_peer_that_is_no_trusted_proxy_is_the_client_whatever_it_says() {
        let addresses = behind("10.0.0.0/8");
        assert_eq!(
            addresses.resolve(ip("198.51.100.1"), ["1.2.3.4"].into_iter()),
            ip("198.51.100.1")
        );
        let nobody = ClientAddresses::default();
        assert_eq!(
            nobody.resolve(ip("10.0.0.2"), ["1.2.3.4"].into_iter()),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn ports_mapped_addresses_and_junk() {
        let addresses = behind("10.0.0.0/8, ::1/128");
        assert_eq!(
            addresses.resolve(ip("::1"), ["[2001:db8::7]:4711"].into_iter()),
            ip("2001:db8::7")
        );
        assert_eq!(
            addresses.resolve(ip("::ffff:10.0.0.2"), ["203.0.113.9:80"].into_iter()),
            ip("203.0.113.9")
        );
        // Junk to the right of every real entry: the last trusted hop.
        assert_eq!(
            addresses.resolve(ip("10.0.0.2"), ["203.0.113.9, unknown"].into_iter()),
            ip("10.0.0.2")
        );
        // Only proxies: the leftmost of them.
        assert_eq!(
            addresses.resolve(ip("10.0.0.2"), ["10.0.0.3, 10.0.0.4"].into_iter()),
            ip("10.0.0.3")
        );
    }
}
