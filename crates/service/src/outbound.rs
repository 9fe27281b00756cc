//! Where the registry may send requests that users configure (project and group hooks, a
//! group's dependency proxy upstreams): not to
//! the registry's own machine or its local network unless the operator allows it
//! (`webhooks.allow_local_requests`, GitLab's "Allow requests to the local network from webhooks
//! and integrations"). Otherwise any maintainer could make the server probe or call internal
//! services (server-side request forgery), such as a cloud metadata endpoint or the database.
//!
//! The rule is checked twice from this one place: when a hook is saved (its host as written) and
//! when it is delivered (every address its name resolves to, at connect time, so a name that
//! later resolves elsewhere cannot slip through).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a destination was refused; the text is shown to the user.
pub const LOCAL_NETWORK_REFUSED: &str =
    "is blocked: requests to the local network are not allowed \
     (an administrator can allow them with webhooks.allow_local_requests)";

/// Whether `ip` belongs to this machine or a local or special-purpose network: loopback,
/// unspecified, private (RFC 1918), carrier-grade NAT, link-local (cloud metadata endpoints
/// live there), multicast, broadcast, benchmarking and reserved ranges, IPv6 unique-local and
/// link-local, and IPv4 addresses written in IPv6 form (mapped, compatible, NAT64, 6to4).
pub fn is_local_network(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_local_v4(v4),
        IpAddr::V6(v6) => is_local_v6(v6),
    }
}

fn is_local_v4(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || a >= 240 // reserved
}

fn is_local_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    if let Some(v4) = embedded_v4(ip) {
        return is_local_v4(v4);
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local
        || (segments[0] & 0xffc0) == 0xfe80 // link-local
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
}

/// The IPv4 address an IPv6 address stands for, where it stands for one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    // ::a.b.c.d (compatible, deprecated) but not :: and ::1.
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        return Some(low);
    }
    // NAT64 well-known prefix 64:ff9b::/96.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low);
    }
    // 6to4 2002:AABB:CCDD::/48.
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    None
}

/// Whether a host name names this machine however the resolver is set up (`localhost`,
/// `*.localhost`, with or without the final dot, any case).
pub fn is_localhost_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Checks a URL's host as written: an address on the local network, or a localhost name, is
/// refused unless `allow_local`. Other names are checked at delivery, address by address.
pub fn check_host(host: &url::Host<&str>, allow_local: bool) -> Result<(), &'static str> {
    if allow_local {
        return Ok(());
    }
    let local = match host {
        url::Host::Ipv4(ip) => is_local_v4(*ip),
        url::Host::Ipv6(ip) => is_local_v6(*ip),
        url::Host::Domain(name) => is_localhost_name(name),
    };
    if local {
        Err(LOCAL_NETWORK_REFUSED)
    } else {
        Ok(())
    }
}

/// [`LOCAL_NETWORK_REFUSED`] for a destination another setting allows.
pub fn local_network_refused(setting: &str) -> String {
    format!(
        "is blocked: requests to the local network are not allowed \
         (an administrator can allow them with {setting})"
    )
}

/// A resolver for clients that may reach public addresses only: a host name resolves to its
/// public addresses, and a name with none is refused (naming `setting`, which allows local
/// ones). Host names are checked here, at connect time; an address written in a URL is not
/// resolved, so check it with [`check_host`] too.
pub struct PublicAddressesOnly {
    pub setting: &'static str,
}

impl reqwest::dns::Resolve for PublicAddressesOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let setting = self.setting;
        Box::pin(async move {
            let all: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<std::net::SocketAddr> =
                all.into_iter().filter(|a| !is_local_network(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} {}", local_network_refused(setting)).into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(url: &str) -> url::Host<String> {
        url::Url::parse(url).unwrap().host().unwrap().to_owned()
    }

    #[test]
    fn every_spelling_of_a_local_address_is_refused() {
        for url in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://0/",
            "http://0.0.0.0/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://[::1]/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::10.0.0.1]/",
            "http://[2002:7f00:1::]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://localhost/",
            "http://LOCALHOST./",
            "http://api.localhost/",
        ] {
            let host = host_of(url);
            let host = match &host {
                url::Host::Domain(d) => url::Host::Domain(d.as_str()),
                url::Host::Ipv4(ip) => url::Host::Ipv4(*ip),
                url::Host::Ipv6(ip) => url::Host::Ipv6(*ip),
            };
            assert_eq!(check_host(&host, false), Err(LOCAL_NETWORK_REFUSED), "{url} passed");
            assert_eq!(check_host(&host, true), Ok(()), "{url} refused though allowed");
        }
    }

    #[test]
    fn public_addresses_and_names_pass() {
        for ip in ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111"] {
            assert!(!is_local_network(ip.parse().unwrap()), "{ip} counted as local");
        }
        assert_eq!(check_host(&url::Host::Domain("hooks.example"), false), Ok(()));
        assert_eq!(check_host(&url::Host::Domain("localhost.example"), false), Ok(()));
    }
}
