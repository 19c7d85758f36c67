//! A list of IP addresses and CIDR ranges, IPv4 and IPv6, parsed once and matched without
//! allocating: APISIX's `core.ip` / `resty.ipmatcher`, used by `ip-restriction`
//! (`whitelist`, `blacklist`) and `real-ip` (`trusted_addresses`).
//!
//! Like `resty.ipmatcher`, exact addresses sit in hash sets and ranges in one hash set per
//! prefix length, so a lookup costs one probe per distinct prefix length, however long the
//! list. A range written with host bits set (`192.168.0.1/24`) means its network
//! (`192.168.0.0/24`), as APISIX reads it. An IPv4-mapped IPv6 client address
//! (`::ffff:10.0.0.1`, what a dual-stack listener reports for an IPv4 client) is matched as
//! the IPv4 address it carries.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::registry::PluginError;

/// Addresses and ranges (see the module docs).
#[derive(Debug, Default, Clone)]
pub struct IpList {
    v4: HashSet<u32>,
    v6: HashSet<u128>,
    /// `(prefix length, networks)`, longest prefix first.
    v4_nets: Vec<(u8, HashSet<u32>)>,
    v6_nets: Vec<(u8, HashSet<u128>)>,
}

fn mask4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

fn add_net<T: std::hash::Hash + Eq>(nets: &mut Vec<(u8, HashSet<T>)>, len: u8, net: T) {
    match nets.iter_mut().find(|(l, _)| *l == len) {
        Some((_, set)) => {
            set.insert(net);
        }
        None => {
            nets.push((len, HashSet::from([net])));
            nets.sort_by_key(|(l, _)| std::cmp::Reverse(*l));
        }
    }
}

/// One address or range as APISIX's `core.ip.validate_cidr_or_ip` accepts it.
pub fn parse_entry(s: &str) -> Option<IpNet> {
    match s.split_once('/') {
        Some((addr, len)) => {
            let addr: IpAddr = addr.parse().ok()?;
            if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let len: u8 = len.parse().ok()?;
            IpNet::new(addr, len).ok().map(|n| n.trunc())
        }
        None => s.parse::<IpAddr>().ok().map(IpNet::from),
    }
}

impl IpList {
    /// The list of `items`, which sit at `path` in the plugin's configuration.
    ///
    /// Errors: an empty list (`path: must not be empty`), or an entry that is neither an
    /// address nor a CIDR range (`path[1]: invalid ip address: 10.0.0.300`, APISIX's words).
    pub fn parse(path: &str, items: &[String]) -> Result<IpList, PluginError> {
        if items.is_empty() {
            return Err(PluginError::new(path, "must not be empty"));
        }
        let mut list = IpList::default();
        for (i, item) in items.iter().enumerate() {
            let net = parse_entry(item).ok_or_else(|| {
                PluginError::new(
                    format!("{path}[{i}]"),
                    format!("invalid ip address: {item}"),
                )
            })?;
            list.insert(net);
        }
        Ok(list)
    }

    fn insert(&mut self, net: IpNet) {
        match net {
            IpNet::V4(n) if n.prefix_len() == 32 => {
                self.v4.insert(u32::from(n.addr()));
            }
            IpNet::V4(n) => add_net(&mut self.v4_nets, n.prefix_len(), u32::from(n.addr())),
            IpNet::V6(n) if n.prefix_len() == 128 => {
                self.v6.insert(u128::from(n.addr()));
            }
            IpNet::V6(n) => add_net(&mut self.v6_nets, n.prefix_len(), u128::from(n.addr())),
        }
    }

    /// Whether `ip` is one of the addresses or inside one of the ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.contains(&a)
                    || self
                        .v4_nets
                        .iter()
                        .any(|(len, set)| set.contains(&(a & mask4(*len))))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.contains(&a)
                    || self
                        .v6_nets
                        .iter()
                        .any(|(len, set)| set.contains(&(a & mask6(*len))))
            }
        }
    }

    /// Whether the text `addr` is an address in the list (false for text that is no
    /// address, as `resty.ipmatcher` answers).
    pub fn contains_str(&self, addr: &str) -> bool {
        addr.parse().is_ok_and(|ip| self.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> IpList {
        let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        IpList::parse("whitelist", &items).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_and_ranges_of_both_families() {
        let l = list(&[
            "192.168.0.1/24",
            "10.0.0.7",
            "2001:db8::/32",
            "::1",
            "0.0.0.0/0",
        ]);
        assert!(l.contains(ip("192.168.0.200")));
        assert!(l.contains(ip("10.0.0.7")));
        assert!(l.contains(ip("2001:db8:1::5")));
        assert!(l.contains(ip("::1")));
        assert!(!l.contains(ip("2001:db9::1")));
        // 0.0.0.0/0 holds every IPv4 address, and IPv4-mapped IPv6 ones.
        assert!(l.contains(ip("8.8.8.8")));
        assert!(l.contains(ip("::ffff:8.8.8.8")));

        let l = list(&["192.168.1.241", "127.0.0.0/8"]);
        assert!(l.contains(ip("192.168.1.241")));
        assert!(!l.contains(ip("192.168.1.240")));
        assert!(l.contains(ip("127.1.2.3")));
        assert!(l.contains(ip("::ffff:127.0.0.1")));
        assert!(!l.contains(ip("::1")));
        assert!(l.contains_str("127.0.0.1"));
        assert!(!l.contains_str("127.0.0.1:80"));
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in [
            "10.0.0.300",
            "10.0.0.1/33",
            "::1/129",
            "10.0.0.1/",
            "host",
            "1.2.3.4/-1",
        ] {
            let e = IpList::parse("blacklist", &["10.0.0.1".into(), bad.into()]).unwrap_err();
            assert_eq!(e.path, "blacklist[1]", "{bad}");
            assert_eq!(e.message, format!("invalid ip address: {bad}"));
        }
        assert!(IpList::parse("blacklist", &[]).is_err());
    }
}
