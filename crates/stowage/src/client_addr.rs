//! Which address a request comes from, computed once per request for every surface.
//!
//! The connection's peer is the client, unless the peer is a proxy the operator trusts
//! (`http.trusted_proxies`, a list of CIDRs): then `X-Forwarded-For` is read from its right
//! end — each proxy appends the address it received the request from — skipping entries that
//! are themselves trusted proxies; the first one that is not is the client. Entries left of it
//! were written by the client itself and are never believed. A malformed header (or a request
//! through a trusted proxy that sent none) counts as coming from the peer itself.
//!
//! The result goes into the request's extensions as [`auth::ClientAddr`]; the token service
//! throttles failed logins by it and the access log records it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `http.trusted_proxies`: the networks whose `X-Forwarded-For` is believed. Written as a list
/// (`[10.0.0.0/8, 127.0.0.1/32]`) or one string with commas (`10.0.0.0/8,127.0.0.1`), as the
/// environment allows; a bare address means just that address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    pub fn parse(entries: &[&str]) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for entry in entries.iter().flat_map(|e| e.split(',')).map(str::trim) {
            if entry.is_empty() {
                continue;
            }
            let net = match entry.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => entry.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                    format!(
                        "{entry:?} is not a network in CIDR notation (like 10.0.0.0/8 or \
                         fd00::/8) or an IP address"
                    )
                })?,
            };
            nets.push(net);
        }
        Ok(TrustedProxies(nets.into()))
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn contains(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&addr))
    }
}

impl Serialize for TrustedProxies {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|net| net.to_string()))
    }
}

impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            One(String),
            List(Vec<String>),
        }
        let entries = match Written::deserialize(deserializer)? {
            Written::One(s) => vec![s],
            Written::List(list) => list,
        };
        let entries: Vec<&str> = entries.iter().map(String::as_str).collect();
        TrustedProxies::parse(&entries).map_err(serde::de::Error::custom)
    }
}

/// The client address of a request that came from `peer` with `headers`.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    // Several X-Forwarded-For headers read as one list, in order (RFC 9110, 5.3).
    let mut entries = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else { return peer };
        entries.extend(value.split(',').map(str::trim));
    }
    let mut client = peer;
    for entry in entries.iter().rev() {
        let Some(addr) = forwarded_addr(entry) else { return peer };
        client = addr;
        if !trusted.contains(addr) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`203.0.113.7:4711`,
/// `[2001:db8::1]:4711`), as some proxies write it.
fn forwarded_addr(entry: &str) -> Option<IpAddr> {
    let addr = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
    Some(addr.to_canonical())
}

/// Middleware: puts the request's [`auth::ClientAddr`] into its extensions. A request without
/// a peer address (one not served by `axum::serve` with connect info) gets none, and the
/// token service then counts it as coming from the unspecified address.
pub async fn layer(
    axum::extract::State(trusted): axum::extract::State<TrustedProxies>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    if let Some(peer) = peer {
        let client = client_addr(peer, request.headers(), &trusted);
        request.extensions_mut().insert(auth::ClientAddr(client));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(list).unwrap()
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_claim() {
        let none = TrustedProxies::default();
        assert_eq!(client_addr(ip("198.51.100.1"), &xff(&["1.2.3.4"]), &none), ip("198.51.100.1"));
        let lan = proxies(&["10.0.0.0/8"]);
        assert_eq!(client_addr(ip("127.0.0.1"), &xff(&["1.2.3.4"]), &lan), ip("127.0.0.1"));
    }

    #[test]
    fn trusted_proxies_report_the_client_from_the_right() {
        let p = proxies(&["10.0.0.0/8", "127.0.0.1/32"]);
        let peer = ip("127.0.0.1");
        assert_eq!(client_addr(peer, &xff(&["203.0.113.7"]), &p), ip("203.0.113.7"));
        // The client's own (spoofed) entries are left of the one the proxy appended.
        assert_eq!(
            client_addr(peer, &xff(&["6.6.6.6, 1.1.1.1, 203.0.113.7"]), &p),
            ip("203.0.113.7")
        );
        // Proxy chains: trusted hops on the right are skipped.
        assert_eq!(
            client_addr(peer, &xff(&["6.6.6.6, 203.0.113.7, 10.1.2.3"]), &p),
            ip("203.0.113.7")
        );
        // Several headers are one list.
        assert_eq!(
            client_addr(peer, &xff(&["6.6.6.6", "203.0.113.7, 10.0.0.9"]), &p),
            ip("203.0.113.7")
        );
        // Every hop trusted: the leftmost is the client.
        assert_eq!(client_addr(peer, &xff(&["10.0.0.5, 10.0.0.9"]), &p), ip("10.0.0.5"));
        // Ports and IPv6 spellings.
        assert_eq!(client_addr(peer, &xff(&["203.0.113.7:4711"]), &p), ip("203.0.113.7"));
        assert_eq!(client_addr(peer, &xff(&["[2001:db8::1]:4711"]), &p), ip("2001:db8::1"));
        assert_eq!(client_addr(peer, &xff(&["2001:db8::1"]), &p), ip("2001:db8::1"));
        assert_eq!(client_addr(peer, &xff(&["::ffff:203.0.113.7"]), &p), ip("203.0.113.7"));
    }

    #[test]
    fn malformed_or_missing_headers_mean_the_peer() {
        let p = proxies(&["127.0.0.1"]);
        let peer = ip("127.0.0.1");
        assert_eq!(client_addr(peer, &HeaderMap::new(), &p), peer);
        for bad in ["unknown", "203.0.113.7, garbage", "", "1.2.3.4 5.6.7.8", "300.1.1.1"] {
            assert_eq!(client_addr(peer, &xff(&[bad]), &p), peer, "{bad:?}");
        }
        // A garbage entry left of the client is never reached.
        assert_eq!(client_addr(peer, &xff(&["garbage, 203.0.113.7"]), &p), ip("203.0.113.7"));
        // A peer written as an IPv4-mapped IPv6 address is still the trusted proxy.
        let mapped = IpAddr::V6(std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        assert_eq!(client_addr(mapped, &xff(&["203.0.113.7"]), &p), ip("203.0.113.7"));
    }

    #[test]
    fn configuration_spellings() {
        assert_eq!(proxies(&["10.0.0.0/8,127.0.0.1/32"]), proxies(&["10.0.0.0/8", "127.0.0.1/32"]));
        assert_eq!(proxies(&["127.0.0.1"]), proxies(&["127.0.0.1/32"]));
        assert!(proxies(&[""]).is_empty());
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(&["proxy.internal"]).is_err());
        let json = serde_json::to_string(&proxies(&["10.0.0.0/8", "::1"])).unwrap();
        assert_eq!(json, r#"["10.0.0.0/8","::1/128"]"#);
    }
}
