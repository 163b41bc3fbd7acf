//! NAPT router profiles: the netfilter rules (iptables-nft) and conntrack settings
//! installed in a router's namespace.
//!
//! Both profiles masquerade everything leaving through the WAN interface and behave
//! like a home router towards the outside: only traffic belonging to a connection
//! started from inside (conntrack ESTABLISHED/RELATED) comes in.
//!
//! | profile  | MASQUERADE | INVALID dropped (INPUT, FORWARD) | unsolicited inbound | `nf_conntrack_tcp_loose` |
//! |----------|------------|----------------------------------|---------------------|--------------------------|
//! | `home`   | yes        | yes                              | dropped             | 1 (kernel default)       |
//! | `strict` | yes        | yes                              | dropped             | 0                        |
//!
//! With `nf_conntrack_tcp_loose=1` (the default) conntrack picks up a TCP connection
//! in the middle: a segment without a SYN that matches no entry creates one, so it is
//! NEW, not INVALID, and is dropped only as unsolicited. With `0` such a segment is
//! INVALID. This matters to a migrating connection: after a move the NAPT has no
//! mapping for the connection, and only a SYN (an MSYN) may create one.
//!
//! Every DROP rule carries a comment ([`INVALID_COMMENT`], [`UNSOLICITED_COMMENT`],
//! [`OFF_LAN_COMMENT`]) so its packet counter can be read back ([`NaptCounters`]).

use std::fmt;
use std::str::FromStr;

use crate::error::{LabError, Result};
use crate::lab::Lab;
use crate::netfilter;

/// Comment on the rules dropping conntrack-INVALID packets.
pub const INVALID_COMMENT: &str = "sustain-napt-invalid";
/// Comment on the rules dropping unsolicited inbound packets.
pub const UNSOLICITED_COMMENT: &str = "sustain-napt-unsolicited";
/// Comment on the rule dropping what came in on the WAN and would not leave
/// on the LAN: a reply for a host that has left the LAN would otherwise
/// follow the default route back out of the WAN, where a home router's
/// connected LAN subnet (ARP failing) drops it.
pub const OFF_LAN_COMMENT: &str = "sustain-napt-off-lan";

/// How a NAPT router treats traffic. See the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NaptProfile {
    /// MASQUERADE, drop unsolicited inbound and INVALID, default conntrack.
    #[default]
    Home,
    /// `Home` plus `nf_conntrack_tcp_loose=0`: no mid-stream pickup of TCP connections.
    Strict,
}

impl NaptProfile {
    /// The name used in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            NaptProfile::Home => "home",
            NaptProfile::Strict => "strict",
        }
    }

    /// Every profile, for documentation and error messages.
    pub const ALL: [NaptProfile; 2] = [NaptProfile::Home, NaptProfile::Strict];
}

impl fmt::Display for NaptProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NaptProfile {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        NaptProfile::ALL
            .into_iter()
            .find(|profile| profile.name() == s)
            .ok_or_else(|| format!("unknown NAPT profile {s:?}; expected \"home\" or \"strict\""))
    }
}

/// The iptables-restore input for a NAPT with `wan` (outside) and `lan` (inside)
/// interfaces; `lan` may end in `+` to match several. Replaces the nat and filter
/// tables.
pub fn ruleset(wan: &str, lan: &str) -> String {
    format!(
        "*nat\n\
         :PREROUTING ACCEPT [0:0]\n\
         :INPUT ACCEPT [0:0]\n\
         :OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n\
         -A POSTROUTING -o {wan} -j MASQUERADE\n\
         COMMIT\n\
         *filter\n\
         :INPUT ACCEPT [0:0]\n\
         :FORWARD ACCEPT [0:0]\n\
         :OUTPUT ACCEPT [0:0]\n\
         -A INPUT -m conntrack --ctstate INVALID -m comment --comment {INVALID_COMMENT} -j DROP\n\
         -A INPUT -i lo -j ACCEPT\n\
         -A INPUT -i {lan} -j ACCEPT\n\
         -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
         -A INPUT -m comment --comment {UNSOLICITED_COMMENT} -j DROP\n\
         -A FORWARD -m conntrack --ctstate INVALID -m comment --comment {INVALID_COMMENT} -j DROP\n\
         -A FORWARD -i {wan} ! -o {lan} -m comment --comment {OFF_LAN_COMMENT} -j DROP\n\
         -A FORWARD -i {lan} -o {wan} -j ACCEPT\n\
         -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
         -A FORWARD -m comment --comment {UNSOLICITED_COMMENT} -j DROP\n\
         COMMIT\n"
    )
}

/// Installs `profile` in `router` (already a forwarding router with both interfaces).
pub fn install(lab: &Lab, router: &str, profile: NaptProfile, wan: &str, lan: &str) -> Result<()> {
    lab.iptables_restore(router, &ruleset(wan, lan), false)?;
    // The rules above loaded nf_conntrack, so its per-namespace sysctls exist now.
    let loose = match profile {
        NaptProfile::Home => "1",
        NaptProfile::Strict => "0",
    };
    lab.sysctl_write(router, "net.netfilter.nf_conntrack_tcp_loose", loose)?;
    let applied = lab.sysctl_read(router, "net.netfilter.nf_conntrack_tcp_loose")?;
    if applied != loose {
        return Err(LabError::UnexpectedOutput {
            what: format!("nf_conntrack_tcp_loose in {router}"),
            detail: format!("wrote {loose}, reads {applied}"),
        });
    }
    tracing::debug!(router, %profile, wan, lan, "NAPT installed");
    Ok(())
}

/// Packets a NAPT's DROP rules have dropped so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NaptCounters {
    /// Conntrack-INVALID packets dropped (INPUT + FORWARD).
    pub invalid: u64,
    /// Unsolicited inbound packets dropped (INPUT + FORWARD).
    pub unsolicited: u64,
}

/// Reads the DROP counters of `router`.
pub fn counters(lab: &Lab, router: &str) -> Result<NaptCounters> {
    let mut counters = NaptCounters::default();
    for chain in ["INPUT", "FORWARD"] {
        let listing = lab.iptables(router, &["-t", "filter", "-L", chain, "-v", "-n", "-x"])?;
        counters.invalid += netfilter::packets_of_commented_rules(&listing, INVALID_COMMENT)?;
        counters.unsolicited +=
            netfilter::packets_of_commented_rules(&listing, UNSOLICITED_COMMENT)?;
    }
    Ok(counters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_by_name() {
        assert_eq!("home".parse::<NaptProfile>(), Ok(NaptProfile::Home));
        assert_eq!("strict".parse::<NaptProfile>(), Ok(NaptProfile::Strict));
        assert!("open".parse::<NaptProfile>().is_err());
    }

    #[test]
    fn ruleset_masquerades_wan_and_accepts_only_lan_initiated_traffic() {
        let rules = ruleset("g2", "v-+");
        assert!(rules.contains("-A POSTROUTING -o g2 -j MASQUERADE"));
        assert!(rules.contains("-A FORWARD -i v-+ -o g2 -j ACCEPT"));
        // The INVALID drop comes before anything that accepts.
        let invalid = rules
            .find("-A FORWARD -m conntrack --ctstate INVALID")
            .unwrap();
        let accept = rules.find("-A FORWARD -i v-+").unwrap();
        assert!(invalid < accept);
        // The last FORWARD and INPUT rules drop whatever was not accepted.
        let last_forward = rules
            .lines()
            .rfind(|line| line.starts_with("-A FORWARD"))
            .unwrap();
        assert!(last_forward.ends_with("-j DROP"));
        assert!(last_forward.contains(UNSOLICITED_COMMENT));
        assert_eq!(rules.matches("COMMIT").count(), 2);
    }
}
