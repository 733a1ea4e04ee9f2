//! Which webhook URLs agentwire will call: `https` only (plain `http` only to
//! loopback, and only where the deployment allows insecure URLs, as the
//! local stack does), no credentials in the URL, and no address that is
//! private, link-local, a cloud metadata service or otherwise not public,
//! unless its host is allow-listed. The resolved addresses are returned so
//! that a delivery can connect to exactly the addresses that were checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

/// How long a webhook host's DNS resolution may take.
pub const DNS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    #[error("not a valid URL: {0}")]
    Invalid(String),
    #[error("webhook URLs must use https (got {0})")]
    Scheme(String),
    #[error(
        "plain http is allowed only to loopback, and only when the deployment allows insecure URLs"
    )]
    Insecure,
    #[error("webhook URLs must not carry credentials")]
    Credentials,
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("{host} resolves to {addr}, a {class} address; allow-list the host to use it")]
    Forbidden {
        host: String,
        addr: IpAddr,
        class: &'static str,
    },
}

/// The deployment's URL rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    /// Allow `http` and loopback addresses (the local stack).
    pub allow_insecure_loopback: bool,
    /// Hosts (names or IP literals) exempt from the address rules.
    pub allow_hosts: Vec<String>,
}

impl UrlPolicy {
    /// The rules that need no DNS: scheme, credentials, shape.
    pub fn check_syntax(&self, raw: &str) -> Result<Url, UrlRefusal> {
        let url = Url::parse(raw.trim()).map_err(|e| UrlRefusal::Invalid(e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlRefusal::Credentials);
        }
        match url.scheme() {
            "https" => {}
            "http" => {
                let loopback = match url.host() {
                    Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                    Some(Host::Ipv4(ip)) => ip.is_loopback(),
                    Some(Host::Ipv6(ip)) => ip.is_loopback(),
                    None => false,
                };
                if !(self.allow_insecure_loopback && loopback) {
                    return Err(UrlRefusal::Insecure);
                }
            }
            other => return Err(UrlRefusal::Scheme(other.to_owned())),
        }
        if url.host().is_none() {
            return Err(UrlRefusal::Invalid("the URL has no host".into()));
        }
        Ok(url)
    }

    /// All rules: the syntax, then every address the host resolves to.
    pub async fn check(&self, raw: &str) -> Result<(Url, Vec<SocketAddr>), UrlRefusal> {
        let url = self.check_syntax(raw)?;
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let lookup =
            tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((host.as_str(), port)))
                .await
                .map_err(|_| UrlRefusal::Resolve {
                    host: host.clone(),
                    reason: format!("no answer within {DNS_TIMEOUT:?}"),
                })?;
        let addrs: Vec<SocketAddr> = lookup
            .map_err(|e| UrlRefusal::Resolve {
                host: host.clone(),
                reason: e.to_string(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(UrlRefusal::Resolve {
                host,
                reason: "no addresses".into(),
            });
        }
        if self
            .allow_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&host))
        {
            return Ok((url, addrs));
        }
        for a in &addrs {
            match classify(a.ip()) {
                None => {}
                Some("loopback") if self.allow_insecure_loopback => {}
                Some(class) => {
                    return Err(UrlRefusal::Forbidden {
                        host,
                        addr: a.ip(),
                        class,
                    });
                }
            }
        }
        Ok((url, addrs))
    }
}

/// The kind of a non-public address, or `None` for a public one.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(169, 254, 170, 2) {
        return Some("cloud metadata");
    }
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if a == 0 || ip.is_broadcast() || a >= 240 {
        Some("reserved")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if (a, b, c) == (192, 0, 2) || (a, b, c) == (198, 51, 100) || (a, b, c) == (203, 0, 113)
    {
        Some("documentation")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("benchmarking")
    } else if (a, b, c) == (192, 0, 0) {
        Some("protocol assignment")
    } else {
        None
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if seg[0] == 0xfd00 && seg[1] == 0x0ec2 {
        return Some("cloud metadata");
    }
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("reserved")
    } else if seg[..6].iter().all(|s| *s == 0) {
        // ::a.b.c.d, deprecated; some stacks still route it to IPv4.
        Some("IPv4-compatible")
    } else if seg[0] == 0x0064 && seg[1] == 0xff9b {
        // 64:ff9b::/96 and the local-use 64:ff9b:1::/48: a NAT64 gateway
        // turns them into any IPv4 address, private ones included.
        Some("NAT64")
    } else if seg[0] == 0x2002 {
        Some("6to4")
    } else if seg[0] == 0x2001 && seg[1] == 0x0000 {
        Some("Teredo")
    } else if seg[0] & 0xffc0 == 0xfec0 {
        Some("site-local")
    } else if seg[0] & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if seg[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        Some("documentation")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_ranges_that_reach_ipv4_or_private_space_are_refused() {
        for (addr, class) in [
            ("::10.0.0.1", "IPv4-compatible"),
            ("::8.8.8.8", "IPv4-compatible"),
            ("64:ff9b::a9fe:a9fe", "NAT64"),
            ("64:ff9b:1::1", "NAT64"),
            ("2002:a00:1::1", "6to4"),
            ("2001:0:4136:e378::1", "Teredo"),
            ("fec0::1", "site-local"),
            ("feff::1", "site-local"),
        ] {
            let ip: IpAddr = addr.parse().unwrap();
            assert_eq!(classify(ip), Some(class), "{addr}");
        }
        for public in ["2606:4700::1111", "2001:4860::8888", "2a00:1450::1"] {
            assert_eq!(classify(public.parse().unwrap()), None, "{public}");
        }
    }

    fn strict() -> UrlPolicy {
        UrlPolicy::default()
    }

    fn local() -> UrlPolicy {
        UrlPolicy {
            allow_insecure_loopback: true,
            allow_hosts: vec![],
        }
    }

    #[test]
    fn only_https_unless_insecure_loopback_is_allowed() {
        assert!(strict().check_syntax("https://hooks.example.com/a").is_ok());
        assert_eq!(
            strict().check_syntax("http://hooks.example.com/a"),
            Err(UrlRefusal::Insecure)
        );
        assert_eq!(
            strict().check_syntax("http://127.0.0.1:9000/a"),
            Err(UrlRefusal::Insecure)
        );
        assert!(local().check_syntax("http://127.0.0.1:9000/a").is_ok());
        assert!(local().check_syntax("http://localhost:9000/a").is_ok());
        assert_eq!(
            local().check_syntax("http://hooks.example.com/"),
            Err(UrlRefusal::Insecure)
        );
        assert_eq!(
            strict().check_syntax("ftp://x.example/"),
            Err(UrlRefusal::Scheme("ftp".into()))
        );
        assert_eq!(
            strict().check_syntax("https://u:p@x.example/"),
            Err(UrlRefusal::Credentials)
        );
        assert!(matches!(
            strict().check_syntax("not a url"),
            Err(UrlRefusal::Invalid(_))
        ));
    }

    #[test]
    fn classifies_non_public_addresses() {
        let c = |s: &str| classify(s.parse().unwrap());
        assert_eq!(c("169.254.169.254"), Some("cloud metadata"));
        assert_eq!(c("fd00:ec2::254"), Some("cloud metadata"));
        assert_eq!(c("10.1.2.3"), Some("private"));
        assert_eq!(c("172.20.0.1"), Some("private"));
        assert_eq!(c("192.168.1.1"), Some("private"));
        assert_eq!(c("127.0.0.1"), Some("loopback"));
        assert_eq!(c("::1"), Some("loopback"));
        assert_eq!(c("::ffff:10.0.0.1"), Some("private"));
        assert_eq!(c("169.254.1.1"), Some("link-local"));
        assert_eq!(c("fe80::1"), Some("link-local"));
        assert_eq!(c("fc00::1"), Some("private (unique local)"));
        assert_eq!(c("100.64.0.1"), Some("shared (carrier-grade NAT)"));
        assert_eq!(c("0.0.0.0"), Some("reserved"));
        assert_eq!(c("8.8.8.8"), None);
        assert_eq!(c("2606:4700::1111"), None);
    }

    #[tokio::test]
    async fn private_and_metadata_addresses_are_refused_unless_allow_listed() {
        let err = strict().check("https://10.0.0.5/hook").await.unwrap_err();
        assert!(
            matches!(
                err,
                UrlRefusal::Forbidden {
                    class: "private",
                    ..
                }
            ),
            "{err}"
        );
        let err = strict()
            .check("https://169.254.169.254/latest")
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                UrlRefusal::Forbidden {
                    class: "cloud metadata",
                    ..
                }
            ),
            "{err}"
        );
        let err = local().check("https://[fd00:ec2::254]/").await.unwrap_err();
        assert!(matches!(err, UrlRefusal::Forbidden { .. }), "{err}");
        let allowed = UrlPolicy {
            allow_insecure_loopback: false,
            allow_hosts: vec!["10.0.0.5".into()],
        };
        assert!(allowed.check("https://10.0.0.5/hook").await.is_ok());
        let (_, addrs) = local().check("http://127.0.0.1:9/hook").await.unwrap();
        assert_eq!(addrs[0].port(), 9);
    }
}
