//! Stable names: one snake_case name for every event, state and reason the core reports, used
//! alike by logs, metrics, `udplb ctl`, the simulator's traces and scenario files, and the way
//! back from a name to its value ([`Named::from_name`], [`std::str::FromStr`], serde). Each
//! type also has `as_str()` and `ALL`, as [`DropReason`] and [`CloseReason`] always had.
//!
//! | type | names |
//! |---|---|
//! | [`Health`] | `unknown`, `up`, `down` |
//! | [`AdminState`] | `enabled`, `paused`, `disabled`, `draining`, `removed` |
//! | [`FrontendState`] | `unknown`, `up`, `down` |
//! | [`CheckCode`] | `L4OK`, `L4CON`, … (HAProxy's spelling; see [`crate::health`]) |
//! | [`DropReason`], [`CloseReason`] | see [`crate::outcome`] |
//! | [`EventName`] | see below |
//!
//! Events are named by what they report; a change of state is named by the state reached:
//!
//! | event | name |
//! |---|---|
//! | [`HealthEvent::Transition`] | `backend_up`, `backend_down`, `backend_unknown` (by `to`) |
//! | [`HealthEvent::AdminChanged`] | `backend_admin` |
//! | [`HealthEvent::ClusterAllDown`] | `cluster_all_down` |
//! | [`HealthEvent::ClusterRecovered`] | `cluster_recovered` |
//! | [`Output::Frontend`] | `frontend_up`, `frontend_down`, `frontend_unknown` (by `state`) |
//! | [`Event::ListenerDraining`] | `listener_draining` |
//! | [`Event::ListenerDrained`] | `listener_drained` |
//! | [`Event::ListenerResumed`] | `listener_resumed` |
//! | [`Event::BackendDrained`] | `backend_drained` |
//! | [`HealthEvent::Ejected`] | `backend_ejected` |
//! | [`HealthEvent::Readmitted`] | `backend_readmitted` |
//! | [`Event::BackendFault`] | `backend_fault` |
//! | [`PassiveFailure`] | `refused`, `unreachable`, `unanswered`, `send_failed`, `stray_reply` |
//!
//! `backend_admin`, `cluster_all_down`, `cluster_recovered`, `listener_draining`,
//! `listener_drained`, `listener_resumed`, `backend_drained`, `backend_ejected`,
//! `backend_readmitted` and `backend_fault` are also the `event` of the
//! matching `udplb ctl watch` lines. Renaming or removing a name is a contract change, as for
//! drop and close reasons.

use core::fmt;
use core::marker::PhantomData;
use core::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::ser::{Serialize, Serializer};

use crate::balancer::{FrontendState, Output};
use crate::flow::{self, Event};
use crate::health::{AdminState, CheckCode, Health, HealthEvent};
use crate::outcome::{CloseReason, DropReason, PassiveFailure};

/// A type whose every value has one stable name.
pub trait Named: Copy + PartialEq + Sized + 'static {
    /// What its values are, in words, for messages ("drop reason").
    const WHAT: &'static str;
    /// Every value, in declaration order.
    const VALUES: &'static [Self];
    /// Every name, in the order of [`Named::VALUES`].
    const NAMES: &'static [&'static str];

    /// The value's name.
    fn name(self) -> &'static str;

    /// The value with this name.
    fn from_name(name: &str) -> Option<Self> {
        Self::VALUES.iter().copied().find(|value| value.name() == name)
    }

    /// Every name, each in backquotes, comma-separated: for "expected one of" messages.
    fn name_list() -> String {
        let names: Vec<String> = Self::NAMES.iter().map(|name| format!("`{name}`")).collect();
        names.join(", ")
    }
}

/// A name that is not one of a type's names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownName {
    /// What was expected, in words ("health state").
    pub what: &'static str,
    /// The name as given.
    pub name: String,
    /// Every name that would have been accepted.
    pub expected: &'static [&'static str],
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} `{}`, expected one of ", self.what, self.name)?;
        for (position, name) in self.expected.iter().enumerate() {
            let separator = if position == 0 { "" } else { ", " };
            write!(f, "{separator}`{name}`")?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownName {}

/// `T` from its name, or the error that lists every name.
pub fn parse_name<T: Named>(name: &str) -> Result<T, UnknownName> {
    T::from_name(name).ok_or_else(|| UnknownName { what: T::WHAT, name: name.to_owned(), expected: T::NAMES })
}

struct NameVisitor<T>(PhantomData<T>);

impl<T: Named> Visitor<'_> for NameVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} ({})", T::WHAT, T::name_list())
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<T, E> {
        parse_name(name).map_err(E::custom)
    }
}

/// Implements [`Named`], `FromStr` and serde (as the name) for a field-less enum. The `match`
/// in `name` (or the one checking exhaustiveness) fails to compile if a variant is missing.
macro_rules! named {
    // The type's `as_str` is written beside its definition: use it, and list the variants here.
    ($ty:ident, $what:literal, existing { $($variant:ident = $text:literal,)+ }) => {
        impl $ty {
            /// Every value, in declaration order (as [`Named::VALUES`]).
            pub const ALL: &'static [$ty] = &[$($ty::$variant,)+];
        }
        impl Named for $ty {
            const WHAT: &'static str = $what;
            const VALUES: &'static [Self] = $ty::ALL;
            const NAMES: &'static [&'static str] = &[$($text,)+];
            fn name(self) -> &'static str {
                // Every variant must be listed above; `as_str` stays the one source.
                match self {
                    $($ty::$variant => self.as_str(),)+
                }
            }
        }
        named!(@common $ty);
    };
    // A counted enum of `outcome.rs`: it has `ALL` and a `const fn as_str` already.
    ($ty:ident, $what:literal, counted) => {
        impl Named for $ty {
            const WHAT: &'static str = $what;
            const VALUES: &'static [Self] = $ty::ALL;
            const NAMES: &'static [&'static str] = &{
                let mut names = [""; $ty::COUNT];
                let mut index = 0;
                while index < $ty::COUNT {
                    names[index] = $ty::ALL[index].as_str();
                    index += 1;
                }
                names
            };
            fn name(self) -> &'static str {
                self.as_str()
            }
        }
        named!(@common $ty);
    };
    // Names written here: `as_str` and `Display` too.
    ($ty:ident, $what:literal, new { $($variant:ident = $text:literal,)+ }) => {
        impl $ty {
            /// Every value, in declaration order (as [`Named::VALUES`]).
            pub const ALL: &'static [$ty] = &[$($ty::$variant,)+];

            /// Stable snake_case name (see [`crate::names`]).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text,)+
                }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl Named for $ty {
            const WHAT: &'static str = $what;
            const VALUES: &'static [Self] = $ty::ALL;
            const NAMES: &'static [&'static str] = &[$($text,)+];
            fn name(self) -> &'static str {
                self.as_str()
            }
        }
        named!(@common $ty);
    };
    (@common $ty:ident) => {
        impl FromStr for $ty {
            type Err = UnknownName;
            fn from_str(name: &str) -> Result<Self, UnknownName> {
                parse_name(name)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.name())
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(NameVisitor(PhantomData))
            }
        }
    };
}

named!(Health, "health state", existing {
    Unknown = "unknown",
    Up = "up",
    Down = "down",
});

named!(AdminState, "admin state", existing {
    Enabled = "enabled",
    Paused = "paused",
    Disabled = "disabled",
    Draining = "draining",
    Removed = "removed",
});

named!(CheckCode, "check code", existing {
    L4Ok = "L4OK",
    L4Con = "L4CON",
    L4Tout = "L4TOUT",
    L7Ok = "L7OK",
    L7Tout = "L7TOUT",
    L7Rsp = "L7RSP",
    SockErr = "SOCKERR",
    PassiveCon = "PCON",
    PassiveTout = "PTOUT",
    PassiveRecovery = "PRECOV",
    Init = "INI",
});

named!(FrontendState, "listener state", new {
    Unknown = "unknown",
    Up = "up",
    Down = "down",
});

named!(PassiveFailure, "passive failure", existing {
    Refused = "refused",
    Unreachable = "unreachable",
    Unanswered = "unanswered",
    SendFailed = "send_failed",
    StrayReply = "stray_reply",
});

named!(DropReason, "drop reason", counted);
named!(CloseReason, "close reason", counted);

/// The name of every event the core reports: the `event` of a log line, what the simulator
/// counts and what a scenario's `events` expectation names. See the module docs for which
/// output each one names.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventName {
    BackendUp,
    BackendDown,
    BackendUnknown,
    BackendAdmin,
    ClusterAllDown,
    ClusterRecovered,
    FrontendUp,
    FrontendDown,
    FrontendUnknown,
    ListenerDraining,
    ListenerDrained,
    ListenerResumed,
    BackendDrained,
    BackendEjected,
    BackendReadmitted,
    BackendFault,
}

named!(EventName, "event", new {
    BackendUp = "backend_up",
    BackendDown = "backend_down",
    BackendUnknown = "backend_unknown",
    BackendAdmin = "backend_admin",
    ClusterAllDown = "cluster_all_down",
    ClusterRecovered = "cluster_recovered",
    FrontendUp = "frontend_up",
    FrontendDown = "frontend_down",
    FrontendUnknown = "frontend_unknown",
    ListenerDraining = "listener_draining",
    ListenerDrained = "listener_drained",
    ListenerResumed = "listener_resumed",
    BackendDrained = "backend_drained",
    BackendEjected = "backend_ejected",
    BackendReadmitted = "backend_readmitted",
    BackendFault = "backend_fault",
});

impl EventName {
    /// The name of a health transition to `to`.
    pub const fn transition_to(to: Health) -> EventName {
        match to {
            Health::Unknown => EventName::BackendUnknown,
            Health::Up => EventName::BackendUp,
            Health::Down => EventName::BackendDown,
        }
    }

    /// The state a health transition of this name reached, or `None` for other events.
    pub const fn transition(self) -> Option<Health> {
        match self {
            EventName::BackendUnknown => Some(Health::Unknown),
            EventName::BackendUp => Some(Health::Up),
            EventName::BackendDown => Some(Health::Down),
            _ => None,
        }
    }

    /// The name of a listener's change to `state`.
    pub const fn frontend(state: FrontendState) -> EventName {
        match state {
            FrontendState::Unknown => EventName::FrontendUnknown,
            FrontendState::Up => EventName::FrontendUp,
            FrontendState::Down => EventName::FrontendDown,
        }
    }

    /// The listener state a frontend event of this name reached, or `None` for other events.
    pub const fn frontend_state(self) -> Option<FrontendState> {
        match self {
            EventName::FrontendUnknown => Some(FrontendState::Unknown),
            EventName::FrontendUp => Some(FrontendState::Up),
            EventName::FrontendDown => Some(FrontendState::Down),
            _ => None,
        }
    }
}

impl Event {
    /// This event's stable name.
    pub fn name(&self) -> EventName {
        match self {
            Event::ListenerDraining { .. } => EventName::ListenerDraining,
            Event::ListenerDrained { .. } => EventName::ListenerDrained,
            Event::ListenerResumed { .. } => EventName::ListenerResumed,
            Event::BackendDrained { .. } => EventName::BackendDrained,
            Event::BackendFault { .. } => EventName::BackendFault,
        }
    }
}

impl HealthEvent {
    /// This event's stable name (a transition is named by the state reached).
    pub fn name(&self) -> EventName {
        match self {
            HealthEvent::Transition { to, .. } => EventName::transition_to(*to),
            HealthEvent::AdminChanged { .. } => EventName::BackendAdmin,
            HealthEvent::ClusterAllDown { .. } => EventName::ClusterAllDown,
            HealthEvent::ClusterRecovered { .. } => EventName::ClusterRecovered,
            HealthEvent::Ejected { .. } => EventName::BackendEjected,
            HealthEvent::Readmitted { .. } => EventName::BackendReadmitted,
        }
    }
}

impl Output {
    /// The stable name of the event this output reports, or `None` for outputs that are not
    /// events (upstreams, probes, backend states for followers).
    pub fn event_name(&self) -> Option<EventName> {
        match self {
            Output::Health(event) => Some(event.name()),
            Output::Frontend { state, .. } => Some(EventName::frontend(*state)),
            Output::Flow(flow::Output::Event(event)) => Some(event.name()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Named + fmt::Debug + FromStr<Err = UnknownName>>() {
        assert_eq!(T::VALUES.len(), T::NAMES.len(), "{}", T::WHAT);
        for (value, name) in T::VALUES.iter().zip(T::NAMES) {
            assert_eq!(value.name(), *name, "{} {value:?}", T::WHAT);
            assert_eq!(T::from_name(name), Some(*value));
            assert_eq!(name.parse::<T>(), Ok(*value));
        }
        let mut names = T::NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), T::NAMES.len(), "{} names are unique", T::WHAT);
        let error = "no_such_name".parse::<T>().unwrap_err();
        assert!(error.to_string().starts_with(&format!("unknown {} `no_such_name`", T::WHAT)));
    }

    #[test]
    fn every_name_leads_back_to_its_value() {
        round_trip::<Health>();
        round_trip::<AdminState>();
        round_trip::<CheckCode>();
        round_trip::<FrontendState>();
        round_trip::<DropReason>();
        round_trip::<CloseReason>();
        round_trip::<EventName>();
    }

    #[test]
    fn names_are_snake_case_except_haproxy_check_codes() {
        fn snake(name: &str) -> bool {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        }
        let names = [
            Health::NAMES,
            AdminState::NAMES,
            FrontendState::NAMES,
            DropReason::NAMES,
            CloseReason::NAMES,
            EventName::NAMES,
        ];
        for name in names.into_iter().flatten() {
            assert!(snake(name), "{name}");
        }
    }

    #[test]
    fn transitions_and_frontend_changes_are_named_by_the_state_reached() {
        for health in Health::VALUES {
            assert_eq!(EventName::transition_to(*health).transition(), Some(*health));
            assert_eq!(EventName::transition_to(*health).as_str(), format!("backend_{health}"));
        }
        for state in FrontendState::VALUES {
            assert_eq!(EventName::frontend(*state).frontend_state(), Some(*state));
            assert_eq!(EventName::frontend(*state).as_str(), format!("frontend_{state}"));
        }
        let others =
            EventName::VALUES.iter().filter(|e| e.transition().is_none() && e.frontend_state().is_none());
        assert_eq!(
            others.count(),
            EventName::VALUES.len() - Health::VALUES.len() - FrontendState::VALUES.len()
        );
    }

    #[test]
    fn events_know_their_names() {
        use crate::id::{BackendId, ClusterId, ListenerId};
        use crate::time::Instant;
        let (cluster, backend, at) = (ClusterId(0), BackendId(1), Instant::ZERO);
        let transition = HealthEvent::Transition {
            cluster,
            backend,
            from: Health::Up,
            to: Health::Down,
            code: CheckCode::L4Con,
            at,
        };
        assert_eq!(transition.name(), EventName::BackendDown);
        let admin = HealthEvent::AdminChanged {
            cluster,
            backend,
            from: AdminState::Enabled,
            to: AdminState::Paused,
            at,
        };
        assert_eq!(admin.name(), EventName::BackendAdmin);
        assert_eq!(
            Output::Health(HealthEvent::ClusterAllDown { cluster, at }).event_name(),
            Some(EventName::ClusterAllDown)
        );
        let frontend = Output::Frontend { listener: ListenerId(0), state: FrontendState::Down };
        assert_eq!(frontend.event_name().map(EventName::as_str), Some("frontend_down"));
        let drained = Output::Flow(flow::Output::Event(Event::BackendDrained { backend }));
        assert_eq!(drained.event_name(), Some(EventName::BackendDrained));
        let draining = Event::ListenerDraining { listener: ListenerId(0), flows_remaining: 2 };
        assert_eq!(draining.name().as_str(), "listener_draining");
    }

    #[test]
    fn serde_uses_the_names() {
        #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
        struct Sample {
            health: Health,
            admin: AdminState,
            reason: DropReason,
            event: EventName,
        }
        let text = "health = \"down\"\nadmin = \"paused\"\nreason = \"shed\"\nevent = \"backend_drained\"\n";
        let sample: Sample = toml::from_str(text).unwrap();
        assert_eq!(
            sample,
            Sample {
                health: Health::Down,
                admin: AdminState::Paused,
                reason: DropReason::Shed,
                event: EventName::BackendDrained
            }
        );
        assert_eq!(toml::to_string(&sample).unwrap(), text);
        let error = toml::from_str::<Sample>(&text.replace("\"down\"", "\"dwon\"")).unwrap_err();
        assert!(
            error
                .message()
                .starts_with("unknown health state `dwon`, expected one of `unknown`, `up`, `down`")
        );
        assert_eq!(error.span(), Some(9..15));
    }
}
