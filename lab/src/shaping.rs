//! Rate limits: a token-bucket filter (`tbf`) as the root qdisc of an interface's
//! egress, installed through rtnetlink (RTM_NEWQDISC) from inside the node's namespace.
//!
//! A veth has no qdisc of its own (`noqueue`), so the tbf is the only queue on the
//! interface: packets beyond the rate wait in its byte FIFO (`limit`) and are dropped
//! once it is full, which is what a bottleneck link does. The rate counts whole
//! Ethernet frames (the link layer is declared as Ethernet), so TCP goodput through a
//! limit of R is about R x 1448/1514 with timestamps on.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{
    DefaultNla, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use rtnetlink::packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption, TcStats2};
use rtnetlink::packet_route::RouteNetlinkMessage;

use crate::error::{LabError, Result};
use crate::lab::Lab;
use crate::names::validate_ifname;
use crate::rtnl;

/// A rate limit on one interface's egress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Link rate in bits per second (Ethernet frames, headers included).
    pub bits_per_second: u64,
    /// Bucket size in bytes: how much may leave back to back at line speed. `None`:
    /// 4 ms worth of the rate, at least two full-size frames.
    pub burst_bytes: Option<u32>,
    /// Queue size in bytes before tail drop. `None`: 100 ms worth of the rate, at
    /// least 64 KiB.
    pub limit_bytes: Option<u32>,
}

impl RateLimit {
    /// `bits_per_second` with the default burst and queue size.
    pub fn bits_per_second(bits_per_second: u64) -> RateLimit {
        RateLimit {
            bits_per_second,
            burst_bytes: None,
            limit_bytes: None,
        }
    }

    /// `mbit` megabits (10^6 bits) per second.
    pub fn mbit(mbit: u64) -> RateLimit {
        RateLimit::bits_per_second(mbit.saturating_mul(1_000_000))
    }

    /// The rate in bytes per second.
    pub fn bytes_per_second(&self) -> u64 {
        self.bits_per_second / 8
    }

    fn burst(&self) -> u32 {
        self.burst_bytes.unwrap_or_else(|| {
            let four_ms = self.bytes_per_second() / 250;
            u32::try_from(four_ms.max(2 * MAX_FRAME)).unwrap_or(u32::MAX)
        })
    }

    fn limit(&self) -> u32 {
        self.limit_bytes.unwrap_or_else(|| {
            let hundred_ms = self.bytes_per_second() / 10;
            u32::try_from(hundred_ms.max(64 << 10)).unwrap_or(u32::MAX)
        })
    }

    fn validate(&self) -> Result<()> {
        if self.bytes_per_second() == 0 {
            return Err(LabError::InvalidValue(format!(
                "rate of {} bit/s is below one byte per second",
                self.bits_per_second
            )));
        }
        if u64::from(self.burst()) < MAX_FRAME {
            return Err(LabError::InvalidValue(format!(
                "burst of {} bytes is smaller than a full-size frame ({MAX_FRAME} bytes)",
                self.burst()
            )));
        }
        if u64::from(self.limit()) < MAX_FRAME {
            return Err(LabError::InvalidValue(format!(
                "queue of {} bytes cannot hold a full-size frame",
                self.limit()
            )));
        }
        Ok(())
    }

    /// How long the queue takes to drain at the rate when full.
    pub fn queue_delay(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.limit()) / self.bytes_per_second() as f64)
    }
}

/// A 1500-byte packet in an Ethernet frame (without FCS), as tbf measures it.
const MAX_FRAME: u64 = 1514;

/// What a rate limit has done, from the qdisc's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShaperStats {
    /// Bytes and packets sent.
    pub bytes: u64,
    pub packets: u64,
    /// Packets dropped because the queue was full.
    pub drops: u64,
    /// Times a packet had to wait for tokens.
    pub overlimits: u64,
    /// Bytes and packets queued right now.
    pub backlog_bytes: u64,
    pub backlog_packets: u64,
}

/// Puts `limit` on the egress of `ifname` in `node`, replacing any root qdisc there.
pub fn set_rate_limit(lab: &Lab, node: &str, ifname: &str, limit: &RateLimit) -> Result<()> {
    validate_ifname(ifname)?;
    limit.validate()?;
    let netns = lab.netns(node)?;
    let name = netns.name().to_string();
    let options = tbf_options(limit);
    netns.run(move || {
        rtnl::with_rtnl(|handle| async move {
            let index = index_i32(rtnl::link_index(&handle, &name, ifname).await?)?;
            let mut message = TcMessage::with_index(index);
            message.header.parent = TcHandle::ROOT;
            message.header.handle = TcHandle { major: 1, minor: 0 };
            message.attributes.push(TcAttribute::Kind("tbf".into()));
            message.attributes.push(TcAttribute::Options(options));
            // `tc qdisc replace dev <ifname> root handle 1: tbf ...`. rtnetlink 0.24's
            // QDiscNewRequest cannot carry options, so the message is sent as built.
            let mut request =
                NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(message));
            request.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
            let context = || format!("adding tbf to {ifname} in {name}");
            let mut handle = handle;
            let mut response = handle
                .request(request)
                .map_err(|err| LabError::netlink(context(), err))?;
            while let Some(reply) = response.next().await {
                if let NetlinkPayload::Error(err) = reply.payload {
                    if err.code.is_some() {
                        return Err(LabError::netlink(
                            context(),
                            rtnetlink::Error::NetlinkError(err),
                        ));
                    }
                }
            }
            Ok(())
        })
    })??;
    tracing::info!(node, ifname, ?limit, "rate limit set");
    Ok(())
}

/// Removes the root qdisc of `ifname` in `node` (back to `noqueue`). Removing a
/// limit that is not there is not an error.
pub fn clear_rate_limit(lab: &Lab, node: &str, ifname: &str) -> Result<()> {
    validate_ifname(ifname)?;
    let netns = lab.netns(node)?;
    let name = netns.name().to_string();
    netns.run(move || {
        rtnl::with_rtnl(|handle| async move {
            let index = rtnl::link_index(&handle, &name, ifname).await?;
            let mut request = handle.qdisc().del(index_i32(index)?);
            request.message_mut().header.parent = TcHandle::ROOT;
            match request.execute().await {
                Ok(()) => Ok(()),
                // ENOENT: no root qdisc to delete.
                Err(rtnetlink::Error::NetlinkError(msg))
                    if msg.code.map(|code| -code.get()) == Some(libc::ENOENT) =>
                {
                    Ok(())
                }
                Err(err) => Err(LabError::netlink(
                    format!("removing the root qdisc of {ifname} in {name}"),
                    err,
                )),
            }
        })
    })?
}

/// The counters of the rate limit on `ifname` in `node`; `None` if it has none.
pub fn rate_limit_stats(lab: &Lab, node: &str, ifname: &str) -> Result<Option<ShaperStats>> {
    validate_ifname(ifname)?;
    let netns = lab.netns(node)?;
    let name = netns.name().to_string();
    netns.run(move || {
        rtnl::with_rtnl(|handle| async move {
            let index = index_i32(rtnl::link_index(&handle, &name, ifname).await?)?;
            let mut qdiscs = handle.qdisc().get().index(index).execute();
            while let Some(qdisc) = qdiscs.try_next().await.map_err(|err| {
                LabError::netlink(format!("listing the qdiscs of {ifname} in {name}"), err)
            })? {
                let is_tbf = qdisc
                    .attributes
                    .iter()
                    .any(|attr| matches!(attr, TcAttribute::Kind(kind) if kind == "tbf"));
                if qdisc.header.index == index && is_tbf {
                    return Ok(Some(stats_of(&qdisc)));
                }
            }
            Ok(None)
        })
    })?
}

fn index_i32(index: u32) -> Result<i32> {
    i32::try_from(index).map_err(|_| LabError::InvalidValue(format!("ifindex {index}")))
}

fn stats_of(qdisc: &TcMessage) -> ShaperStats {
    let mut stats = ShaperStats::default();
    for attr in &qdisc.attributes {
        if let TcAttribute::Stats2(parts) = attr {
            for part in parts {
                match part {
                    TcStats2::Basic(basic) => {
                        stats.bytes = basic.bytes;
                        stats.packets = u64::from(basic.packets);
                    }
                    TcStats2::Queue(queue) => {
                        stats.drops = u64::from(queue.drops);
                        stats.overlimits = u64::from(queue.overlimits);
                        stats.backlog_bytes = u64::from(queue.backlog);
                        stats.backlog_packets = u64::from(queue.qlen);
                    }
                    _ => {}
                }
            }
        }
    }
    stats
}

// linux/pkt_sched.h
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
const TC_LINKLAYER_ETHERNET: u8 = 1;

/// `TCA_OPTIONS` of a tbf: `struct tc_tbf_qopt` plus the burst in bytes (so no
/// rate table or tick conversion is needed) and the 64-bit rate when it does not fit
/// the 32-bit field.
fn tbf_options(limit: &RateLimit) -> Vec<TcOption> {
    let rate = limit.bytes_per_second();
    let rate32 = u32::try_from(rate).unwrap_or(u32::MAX);
    // struct tc_ratespec { u8 cell_log; u8 linklayer; u16 overhead; s16 cell_align;
    //                      u16 mpu; u32 rate; }
    let mut ratespec = [0u8; 12];
    ratespec[1] = TC_LINKLAYER_ETHERNET;
    ratespec[8..12].copy_from_slice(&rate32.to_ne_bytes());
    // struct tc_tbf_qopt { tc_ratespec rate; tc_ratespec peakrate; u32 limit;
    //                      u32 buffer; u32 mtu; }
    let mut qopt = Vec::with_capacity(36);
    qopt.extend_from_slice(&ratespec);
    qopt.extend_from_slice(&[0u8; 12]);
    qopt.extend_from_slice(&limit.limit().to_ne_bytes());
    qopt.extend_from_slice(&0u32.to_ne_bytes());
    qopt.extend_from_slice(&0u32.to_ne_bytes());
    let mut options = vec![
        TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, qopt)),
        TcOption::Other(DefaultNla::new(
            TCA_TBF_BURST,
            limit.burst().to_ne_bytes().to_vec(),
        )),
    ];
    if rate > u64::from(u32::MAX) {
        options.push(TcOption::Other(DefaultNla::new(
            TCA_TBF_RATE64,
            rate.to_ne_bytes().to_vec(),
        )));
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::Nla;

    #[test]
    fn defaults_scale_with_the_rate() {
        let limit = RateLimit::mbit(20);
        assert_eq!(limit.bytes_per_second(), 2_500_000);
        assert_eq!(limit.burst(), 10_000);
        assert_eq!(limit.limit(), 250_000);
        assert_eq!(limit.queue_delay(), Duration::from_millis(100));
        let slow = RateLimit::bits_per_second(64_000);
        assert_eq!(slow.burst(), 3028);
        assert_eq!(slow.limit(), 64 << 10);
    }

    #[test]
    fn nonsense_limits_are_refused() {
        assert!(RateLimit::bits_per_second(7).validate().is_err());
        let tiny_burst = RateLimit {
            burst_bytes: Some(1000),
            ..RateLimit::mbit(10)
        };
        assert!(tiny_burst.validate().is_err());
        let tiny_queue = RateLimit {
            limit_bytes: Some(100),
            ..RateLimit::mbit(10)
        };
        assert!(tiny_queue.validate().is_err());
        assert!(RateLimit::mbit(10).validate().is_ok());
    }

    #[test]
    fn tbf_options_carry_rate_limit_and_burst() {
        let options = tbf_options(&RateLimit::mbit(20));
        assert_eq!(options.len(), 2);
        let TcOption::Other(parms) = &options[0] else {
            panic!("parms");
        };
        assert_eq!(parms.kind(), TCA_TBF_PARMS);
        assert_eq!(parms.value_len(), 36);
        let mut value = vec![0u8; 36];
        parms.emit_value(&mut value);
        assert_eq!(value[1], TC_LINKLAYER_ETHERNET);
        assert_eq!(&value[8..12], &2_500_000u32.to_ne_bytes());
        assert_eq!(&value[24..28], &250_000u32.to_ne_bytes());
        let TcOption::Other(burst) = &options[1] else {
            panic!("burst");
        };
        assert_eq!(burst.kind(), TCA_TBF_BURST);

        // 40 Gbit/s does not fit tc_ratespec's u32 bytes per second.
        let fast = tbf_options(&RateLimit::mbit(40_000));
        assert_eq!(fast.len(), 3);
        let TcOption::Other(rate64) = &fast[2] else {
            panic!("rate64");
        };
        assert_eq!(rate64.kind(), TCA_TBF_RATE64);
    }
}
