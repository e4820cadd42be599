//! Typed outcomes: why a datagram was dropped, why a flow was closed.
//!
//! Every variant is counted separately (see [`crate::Stats`]) and has a stable snake_case
//! name for metrics and traces. Adding a variant is a contract change: metrics, traces and
//! the simulator's expectations name them.

use core::fmt;

macro_rules! counted_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+ }
    ) => {
        $(#[$meta])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $( $(#[$vmeta])* $variant, )+ }

        impl $name {
            /// Every variant, in declaration order (the order counters are kept in).
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// The number of variants.
            pub const COUNT: usize = Self::ALL.len();

            /// Position in [`Self::ALL`]; indexes counter arrays.
            pub const fn index(self) -> usize {
                self as usize
            }

            /// Stable snake_case name, used in metrics labels and traces.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

counted_enum! {
    /// Why a datagram was not forwarded (client → backend) or returned (backend → client).
    ///
    /// Client-side admission runs in declaration order: `Truncated` and `Empty` apply to
    /// every datagram; a datagram of an established flow is then forwarded (or, when every
    /// datagram carries a PROXY header, may be `ProxyHeaderTooLarge`); one that would start a
    /// flow is checked for `Draining`, `SourceFlows` and `SourceRate` (a listener with
    /// `source_limits`), `Shed`, `ProxyHeaderTooLarge` and `NoHealthyBackend`, in that order,
    /// before anything is allocated.
    pub enum DropReason {
        /// The datagram did not fit the shell's buffer or exceeds `max_datagram_size`.
        Truncated = "truncated",
        /// An empty client datagram on a listener set to drop them (`empty_datagrams = "drop"`).
        Empty = "empty",
        /// `accept_proxy`: a PROXY v2 header from a source the listener does not trust, or,
        /// where headers are `required`, any datagram from such a source.
        ProxyUntrusted = "proxy_untrusted",
        /// `accept_proxy` with `required`: a trusted upstream's datagram without a header.
        ProxyMissing = "proxy_missing",
        /// `accept_proxy`: a trusted upstream's header that does not decode.
        ProxyInvalid = "proxy_invalid",
        /// The listener is draining and this datagram would start a new flow.
        Draining = "draining",
        /// The datagram's source (its address cut to `source_limits`' prefix) has started
        /// `new_flows_per_second` flows lately, beyond its burst.
        SourceRate = "source_rate",
        /// The datagram's source holds `source_limits.max_flows` flows already.
        SourceFlows = "source_flows",
        /// The flow table (process-wide or this listener's share) is full.
        Shed = "shed",
        /// The PROXY v2 header would push the datagram over `max_datagram_size`.
        ProxyHeaderTooLarge = "proxy_header_too_large",
        /// No backend is eligible and fail-open does not apply.
        NoHealthyBackend = "no_healthy_backend",
        /// The caller's buffer has less headroom than the PROXY v2 header needs; a shell bug.
        InsufficientHeadroom = "insufficient_headroom",
        /// The listener id is not (or no longer) configured.
        UnknownListener = "unknown_listener",
        /// A backend datagram for a flow that no longer exists (closed, or never existed).
        UnknownFlow = "unknown_flow",
        /// The shell could not open the upstream for a new flow (EMFILE, EADDRINUSE, ...).
        UpstreamOpenFailed = "upstream_open_failed",
        /// The shell could not send a forwarded or returned datagram (ENOBUFS, ...).
        SendFailed = "send_failed",
        /// A reply byte-for-byte equal to one the same flow returned less than 100 ms before,
        /// where each request is owed one reply: a copy the network made. Counting it would close the
        /// flow before the replies it is still owed arrive (see `docs/configuration.md`).
        DuplicateReply = "duplicate_reply",
        /// A reply over the cluster's amplification cap: its flow's backend has already sent
        /// back as much as the cap allows for what the client sent.
        Amplification = "amplification",
    }
}

counted_enum! {
    /// Why a flow ended.
    pub enum CloseReason {
        /// The client sent nothing for `idle_timeout.front`.
        IdleFront = "idle_front",
        /// The backend owed a reply and sent nothing for `idle_timeout.back`.
        IdleBack = "idle_back",
        /// The flow returned every reply its `responses` setting asked for.
        ResponsesReached = "responses_reached",
        /// The flow took its `requests` datagrams and owes no more replies (or the backend
        /// went quiet for `idle_timeout.back` while the reply count was unknown).
        RequestsReached = "requests_reached",
        /// The flow reached its maximum age, `lifetime`.
        LifetimeReached = "lifetime_reached",
        /// Its listener (or backend) drained and `drain_timeout` ran out.
        Drained = "drained",
        /// Its backend was removed from the configuration.
        BackendRemoved = "backend_removed",
        /// Its listener was removed from the configuration (or changed address or affinity,
        /// which makes it a new listener).
        ListenerRemoved = "listener_removed",
        /// Its backend went Down and the cluster has `on_backend_down = "close"`.
        BackendDown = "backend_down",
        /// Its backend was Down or ejected when the client sent again, and the cluster has
        /// `on_backend_down = "reselect"`: the datagram started a new flow on another backend.
        Reselected = "reselected",
        /// The backend refused a datagram (ICMP port unreachable, ECONNREFUSED).
        UpstreamRefused = "upstream_refused",
        /// The backend's host or network was unreachable (ICMP host/net unreachable).
        UpstreamUnreachable = "upstream_unreachable",
        /// The shell could not open the flow's upstream.
        UpstreamOpenFailed = "upstream_open_failed",
        /// Closed by an operator command.
        Aborted = "aborted",
        /// The process is shutting down.
        Shutdown = "shutdown",
    }
}

/// What the datapath saw that says something about a backend's health. The flow manager
/// reports it (`Output::PassiveFailure`); the health monitor decides whether it counts.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PassiveFailure {
    /// ICMP port unreachable (ECONNREFUSED) on a flow's upstream.
    Refused,
    /// ICMP host or network unreachable on a flow's upstream.
    Unreachable,
    /// Replies a flow was owed (by its `responses` count) did not come within
    /// `idle_timeout.back`: they were written off, or the flow closed `IdleBack`.
    Unanswered,
    /// A datagram could not be sent to the backend (EMSGSIZE after a path MTU drop, ENOBUFS,
    /// ...): the request is lost as surely as if the network had dropped it.
    SendFailed,
    /// A reply came from the backend's IP but another port than the one it was sent to: it
    /// cannot be matched to a flow and is dropped, so the request it answers is lost.
    StrayReply,
}

impl PassiveFailure {
    /// Stable snake_case name, for metrics labels, logs and traces.
    pub const fn as_str(self) -> &'static str {
        match self {
            PassiveFailure::Refused => "refused",
            PassiveFailure::Unreachable => "unreachable",
            PassiveFailure::Unanswered => "unanswered",
            PassiveFailure::SendFailed => "send_failed",
            PassiveFailure::StrayReply => "stray_reply",
        }
    }
}

impl fmt::Display for PassiveFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How QUIC-LB placed a new flow, as its admission record keeps it and the counters count it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QuicRoute {
    /// Its destination connection ID named the backend's server ID.
    Routed,
    /// Unroutable: not a QUIC packet by the invariant header (placed by the algorithm).
    NotQuic,
    /// Unroutable: its config ID (rotation bits) is 7, or one the cluster lacks.
    UnknownConfig,
    /// Unroutable: the connection ID is shorter than its configuration's.
    TooShort,
    /// Unroutable: it decodes to a server ID no backend of the cluster has (a removed
    /// backend's, or garbage from a client's random ID).
    UnknownServer,
    /// Unroutable: it names a backend whose health is Down.
    ServerDown,
}

impl QuicRoute {
    /// Outcomes, for counter arrays.
    pub const COUNT: usize = 6;
    /// Every outcome, in counter order.
    pub const ALL: [QuicRoute; QuicRoute::COUNT] = [
        QuicRoute::Routed,
        QuicRoute::NotQuic,
        QuicRoute::UnknownConfig,
        QuicRoute::TooShort,
        QuicRoute::UnknownServer,
        QuicRoute::ServerDown,
    ];

    /// Position in counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Its name in metrics, traces and `show flow` (`routed`, `not_quic`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            QuicRoute::Routed => "routed",
            QuicRoute::NotQuic => "not_quic",
            QuicRoute::UnknownConfig => "unknown_config",
            QuicRoute::TooShort => "too_short",
            QuicRoute::UnknownServer => "unknown_server",
            QuicRoute::ServerDown => "server_down",
        }
    }

    /// The outcome stored in three bits (1 to 6; 0 is "no QUIC-LB").
    pub(crate) fn to_bits(self) -> u8 {
        self as u8 + 1
    }

    pub(crate) fn from_bits(bits: u8) -> Option<QuicRoute> {
        QuicRoute::ALL.get(usize::from(bits).checked_sub(1)?).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_match_positions_and_names_are_unique() {
        for (position, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), position);
        }
        for (position, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), position);
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }
}
