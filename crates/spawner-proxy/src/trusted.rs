//! Which peers are proxies in front of Spawner (`--trusted-proxy`): CIDR blocks, and the
//! trust of a peer's address in them.

use crate::forwarded::PeerTrust;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A block of addresses: `10.0.0.0/8`, `fd00::/8`, or one address (`/32`, `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The block's first address (the bits past the prefix are zero).
    network: IpAddr,
    prefix: u8,
}

/// A `--trusted-proxy` value that is not an address or a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not an IP address or a CIDR block ({why}); write e.g. 10.0.0.0/8, 192.168.1.7 or fd00::/8")]
pub struct BadCidr {
    given: String,
    why: &'static str,
}

impl Cidr {
    /// Whether `ip` is in the block. An IPv4 address seen as IPv6 (`::ffff:a.b.c.d`, as a
    /// dual-stack listener reports IPv4 peers) is taken as the IPv4 address it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_v4(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// The first `prefix` bits of `bits` (`prefix` at most 32), the rest zero.
fn mask_v4(bits: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        bits & (u32::MAX << (32 - u32::from(prefix)))
    }
}

/// The first `prefix` bits of `bits` (`prefix` at most 128), the rest zero.
fn mask_v6(bits: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(prefix)))
    }
}

impl FromStr for Cidr {
    type Err = BadCidr;

    fn from_str(s: &str) -> Result<Self, BadCidr> {
        let bad = |why| BadCidr {
            given: s.to_string(),
            why,
        };
        let text = s.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| bad("not an address"))?;
        // An IPv4 block written in IPv6 (`::ffff:10.0.0.0/104`) is kept as written: it
        // matches nothing that `contains` sees, which is never IPv4-mapped.
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad("the prefix is too long"))?
            }
            Some(_) => return Err(bad("the prefix length is not a number")),
        };
        if prefix > max {
            return Err(bad("the prefix is longer than the address"));
        }
        let network = match ip {
            IpAddr::V4(v4) => IpAddr::V4(mask_v4(u32::from(v4), prefix).into()),
            IpAddr::V6(v6) => IpAddr::V6(mask_v6(u128::from(v6), prefix).into()),
        };
        if network != ip {
            // `10.1.2.3/8` is most likely a typo for `10.1.2.3` or `10.0.0.0/8`: say so
            // rather than guess.
            return Err(bad("address bits are set past the prefix"));
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The proxies in front of Spawner whose forwarding headers it keeps; empty by default
/// (Spawner is the edge, and trusts no client's headers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn new(blocks: Vec<Cidr>) -> Self {
        TrustedProxies(blocks)
    }

    /// How far to trust the forwarding headers of a request from `peer`. The route
    /// functions ask this on every request: with no block (the default) it costs nothing.
    pub fn trust(&self, peer: IpAddr) -> PeerTrust {
        if self.0.iter().any(|c| c.contains(peer)) {
            PeerTrust::Trusted
        } else {
            PeerTrust::Untrusted
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn blocks(&self) -> &[Cidr] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_blocks_and_single_addresses() {
        for (text, shown) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("192.168.1.7", "192.168.1.7/32"),
            (" 172.16.0.0/12 ", "172.16.0.0/12"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("fd00::/8", "fd00::/8"),
            ("::1", "::1/128"),
            ("::/0", "::/0"),
        ] {
            let cidr: Cidr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(cidr.to_string(), shown);
        }
    }

    #[test]
    fn refuses_what_is_not_a_block_and_says_what_would_be() {
        for text in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.0/x",
            "10.0.0.0/+8",
            "10.0.0.0/0008",
            "10.1.2.3/8",
            "example.com",
            "10.0.0.0/8/9",
            "[::1]",
        ] {
            let err = text.parse::<Cidr>().expect_err(text);
            assert!(err.to_string().contains("10.0.0.0/8"), "{err}");
        }
    }

    #[test]
    fn contains_the_addresses_of_its_block_only() {
        let block: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(block.contains(ip("10.1.0.0")));
        assert!(block.contains(ip("10.1.255.255")));
        assert!(!block.contains(ip("10.2.0.0")));
        assert!(!block.contains(ip("::1")));
        // An IPv4 peer seen by a dual-stack listener.
        assert!(block.contains(ip("::ffff:10.1.2.3")));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("fd00::1")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fdab::1")) && !v6.contains(ip("fe80::1")));
        let v6_all: Cidr = "::/0".parse().unwrap();
        assert!(v6_all.contains(ip("2001:db8::1")));
    }

    #[test]
    fn trusts_peers_inside_a_block() {
        let none = TrustedProxies::default();
        assert_eq!(none.trust(ip("127.0.0.1")), PeerTrust::Untrusted);
        let some = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()]);
        assert_eq!(some.trust(ip("10.9.8.7")), PeerTrust::Trusted);
        assert_eq!(some.trust(ip("::1")), PeerTrust::Trusted);
        assert_eq!(some.trust(ip("11.0.0.1")), PeerTrust::Untrusted);
    }
}
