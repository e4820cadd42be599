//! Backend selection: the narrow interface between admission and the algorithms.
//!
//! Admission asks a cluster's [`Selector`] for one backend, passing the flow's affinity hash
//! (for the consistent-hash algorithms), a list of backends to exclude (for a retry after a
//! refusal) and whether the cluster fails open. The selector sees the cluster's backends as a
//! list of [`Candidate`]s that the caller keeps in canonical order (by backend id) and updates
//! in place; after any change other than a flow count, the caller calls [`Selector::update`],
//! which rebuilds derived state (a Maglev table, prefix sums of weights) only when the set of
//! backends that new flows may go to, or their weights, actually changed. Nothing is rebuilt
//! or allocated per datagram: a table rebuilt per datagram would be a denial-of-service lever.
//!
//! # Tiers and fail-open
//!
//! New flows go to one *tier*: among candidates that are eligible, weighted above zero and not
//! excluded, the lowest `pool` of the primary (non-backup) backends, or, when no primary
//! qualifies, the lowest pool of the backups. The algorithm runs within that tier only, so
//! pool 1 takes no flow while any pool-0 backend can. When nothing qualifies and the request
//! allows fail-open, the same choice is made over administratively enabled backends whatever
//! their health, and the selection says so (`fail_open: true`), so the caller can count it.
//!
//! # Determinism
//!
//! Every instance that shares the selection key and the configuration makes the same
//! decisions on every machine: randomness comes from one ChaCha8 stream seeded from the
//! selection key and the cluster name, hashes are keyed SipHash-1-3 over canonical byte
//! encodings, table arithmetic is integer, and the one logarithm (weighted rendezvous) comes
//! from `libm`, whose result does not depend on the platform's C library. Tables are built
//! from the routable backends sorted by their identity hash, so the order in which a caller
//! lists its backends cannot change a table: Maglev lets backends claim entries in turn, so
//! an unsorted input would let two instances that list the same backends differently build
//! different tables (`docs/architecture.md`, "Tables are built from a canonical order").

use core::fmt;
use core::hash::Hasher;
use std::net::{IpAddr, SocketAddr};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use siphasher::sip::SipHasher13;

use crate::config::Algorithm;
use crate::id::BackendId;

mod hrw;
mod least_flows;
mod maglev;
mod random;
mod round_robin;
mod routable;
#[cfg(test)]
mod tests;

use maglev::MaglevTable;
use round_robin::RoundRobin;
use routable::{RoutableSet, Tier};

/// What a selector knows about one backend. The caller keeps the list in canonical order
/// (sorted by backend id string) and updates fields in place.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The backend.
    pub backend: BackendId,
    /// Stable identity hashed by the consistent algorithms: [`identity_hash`] of the
    /// backend's id and address. Never the internal `BackendId`, because two instances may
    /// number their backends differently and must still build the same tables.
    pub identity: u64,
    /// Relative share of new flows; 0 takes none.
    pub weight: u32,
    /// Priority: new flows go to the lowest-numbered pool that has a qualifying backend.
    pub pool: u32,
    /// Used only when no primary (non-backup) backend qualifies.
    pub backup: bool,
    /// Health Up or Unknown, and admin-enabled: may take new flows.
    pub eligible: bool,
    /// Admin-enabled (whatever its health): may take new flows in fail-open.
    pub enabled: bool,
    /// Live flows pinned to it (`least_flows` and `power_of_two` read it at each pick, so
    /// changing it needs no [`Selector::update`]).
    pub flows: u64,
}

/// The identity of a backend for the consistent-hash algorithms: keyed SipHash-1-3 over a
/// canonical encoding of its id and address.
///
/// The key is the second half of the selection key (the first half keys flow affinity
/// hashes), so every instance sharing the key agrees, and the value never changes across Rust
/// releases or machines. A backend is its cluster, id and address, so a changed address is a
/// new identity (`docs/architecture.md`, "A backend is its cluster, its id and its address").
/// An IPv4-mapped IPv6 address hashes as its IPv4 form, as flow keys do.
pub fn identity_hash(selection_key: &[u8; 32], id: &str, address: SocketAddr) -> u64 {
    let mut hasher = SipHasher13::new_with_key(&second_half(selection_key));
    hasher.write(b"udplb/backend-identity/v1");
    // A length prefix keeps the encoding unambiguous whatever bytes the id holds.
    hasher.write(&(id.len() as u64).to_le_bytes());
    hasher.write(id.as_bytes());
    match address.ip().to_canonical() {
        IpAddr::V4(v4) => {
            hasher.write(&[4]);
            hasher.write(&v4.octets());
        }
        IpAddr::V6(v6) => {
            hasher.write(&[6]);
            hasher.write(&v6.octets());
        }
    }
    hasher.write(&address.port().to_be_bytes());
    hasher.finish()
}

fn second_half(selection_key: &[u8; 32]) -> [u8; 16] {
    let mut key = [0u8; 16];
    key.copy_from_slice(&selection_key[16..]);
    key
}

/// A selection request for one new flow.
#[derive(Copy, Clone, Debug)]
pub struct SelectionRequest<'a> {
    /// Keyed hash of the flow's affinity key (VIP + client address, with or without port).
    pub affinity_hash: u64,
    /// Backends that must not be chosen (a retry after an ICMP refusal excludes the refuser).
    pub exclude: &'a [BackendId],
    /// When nothing is eligible, choose among administratively enabled backends instead.
    pub fail_open: bool,
}

/// The outcome of a selection.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Index into the cluster's candidate list.
    pub candidate: usize,
    /// The chosen backend.
    pub backend: BackendId,
    /// Chosen in fail-open: nothing was eligible, so health was ignored.
    pub fail_open: bool,
}

/// Keys derived for one cluster, drawn from its ChaCha8 stream when the selector is built.
#[derive(Clone)]
struct DerivedKeys {
    /// Keys the rendezvous score of (affinity, identity).
    rendezvous: SipHasher13,
    /// Keys a Maglev permutation's offset.
    maglev_offset: SipHasher13,
    /// Keys a Maglev permutation's skip.
    maglev_skip: SipHasher13,
}

/// Chooses backends for one cluster's new flows. See the module documentation.
///
/// Build it with [`Selector::new`], then call [`Selector::update`] with the initial candidate
/// list before the first [`Selector::select`]. Until the first update, every pick takes the
/// slow path (the tier recomputed per pick, Maglev replaced by rendezvous hashing).
#[derive(Clone)]
pub struct Selector {
    algorithm: Algorithm,
    keys: DerivedKeys,
    /// The one source of randomness (random and power-of-two picks).
    rng: ChaCha8Rng,
    /// What new flows may go to now, as of the last update; tables are built from it.
    routable: RoutableSet,
    /// The previous routable set, kept to reuse its allocation on the next update.
    spare: RoutableSet,
    /// Length of the candidate list at the last update; a different length at `select` means
    /// the caller changed the list without telling us, so nothing prebuilt is trusted.
    candidate_count: usize,
    /// Running weights of weighted random draws over `routable` (random, power of two).
    cumulative_weights: Vec<u64>,
    round_robin: RoundRobin,
    maglev: MaglevTable,
    rebuilds: u64,
    fingerprint: u64,
}

impl fmt::Debug for Selector {
    /// Prints neither the keys nor the generator's state: `Debug` output reaches logs, and
    /// the selection key is shared by every instance.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selector")
            .field("algorithm", &self.algorithm)
            .field("tier", &self.routable.tier)
            .field("routable", &self.routable.members.len())
            .field("maglev_table_size", &self.maglev.size())
            .field("rebuilds", &self.rebuilds)
            .field("fingerprint", &format_args!("{:016x}", self.fingerprint))
            .finish()
    }
}

impl Selector {
    /// A selector for one cluster. `maglev_table_size` should be a prime (validation insists);
    /// any other value is raised to the next prime, because a Maglev permutation only covers
    /// the whole table when its size is prime.
    ///
    /// The ChaCha8 generator is keyed by `selection_key`, and its stream (ChaCha's nonce) is a
    /// keyed hash of `cluster_name`, so each cluster draws its own sequence while instances
    /// sharing the key and the cluster draw the same one.
    pub fn new(
        algorithm: Algorithm,
        maglev_table_size: u32,
        selection_key: &[u8; 32],
        cluster_name: &str,
    ) -> Selector {
        let mut stream = SipHasher13::new_with_key(&second_half(selection_key));
        stream.write(b"udplb/selection-stream/v1");
        stream.write(cluster_name.as_bytes());
        let mut rng = ChaCha8Rng::from_seed(*selection_key);
        rng.set_stream(stream.finish());
        let mut draw_key = || {
            let mut key = [0u8; 16];
            rng.fill_bytes(&mut key);
            SipHasher13::new_with_key(&key)
        };
        let keys = DerivedKeys { rendezvous: draw_key(), maglev_offset: draw_key(), maglev_skip: draw_key() };
        let routable = RoutableSet::default();
        let fingerprint = fingerprint(algorithm, &routable, None);
        Selector {
            algorithm,
            keys,
            rng,
            routable,
            spare: RoutableSet::default(),
            candidate_count: 0,
            cumulative_weights: Vec::new(),
            round_robin: RoundRobin::default(),
            maglev: MaglevTable::new(maglev::table_size(maglev_table_size)),
            rebuilds: 0,
            fingerprint,
        }
    }

    /// The algorithm this selector runs.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Tells the selector the candidate list changed (eligibility, enabled, weight, pool,
    /// backup, membership). Rebuilds tables only if the routable set (the tier new flows go to,
    /// its members' identities and weights) differs from the one the current tables were built
    /// from; a change in `flows` alone, or in a backend outside the routable tier, rebuilds
    /// nothing. Call it once after [`Selector::new`], then after every such change, never per
    /// datagram.
    pub fn update(&mut self, candidates: &[Candidate]) {
        let mut next = core::mem::take(&mut self.spare);
        next.collect(candidates);
        let changed = !next.routes_like(&self.routable);
        // The fresh set carries the current candidate indices even when nothing else moved.
        self.spare = core::mem::replace(&mut self.routable, next);
        let count_changed = self.candidate_count != candidates.len();
        self.candidate_count = candidates.len();
        if self.algorithm == Algorithm::RoundRobin && (changed || count_changed) {
            // Scores are indexed by candidate; new indices or a new set start the cycle afresh.
            self.round_robin.reset(candidates.len());
        }
        if changed {
            self.rebuild();
        }
    }

    /// Rebuilds what is derived from the routable set. Counted, so tests can assert that
    /// nothing is rebuilt when nothing relevant changed.
    fn rebuild(&mut self) {
        self.rebuilds += 1;
        match self.algorithm {
            Algorithm::Random | Algorithm::PowerOfTwo => {
                random::cumulate(&self.routable.members, &mut self.cumulative_weights);
            }
            Algorithm::Maglev => {
                self.maglev.build(&self.routable.members, &self.keys.maglev_offset, &self.keys.maglev_skip);
            }
            Algorithm::RoundRobin | Algorithm::LeastFlows | Algorithm::Hrw => {}
        }
        let table = (self.algorithm == Algorithm::Maglev).then_some(&self.maglev);
        self.fingerprint = fingerprint(self.algorithm, &self.routable, table);
    }

    /// Snapshots (`crate::snapshot`): what inputs changed and `update` does not derive — the
    /// generator's position, the round-robin scores and the rebuild count.
    pub(crate) fn dynamic_state(&self) -> (u128, Vec<i64>, u64) {
        (self.rng.get_word_pos(), self.round_robin.scores().to_vec(), self.rebuilds)
    }

    /// Restores [`Selector::dynamic_state`] over a selector built from the configuration:
    /// `update` derives the routable set and tables from `candidates`, then the rest is set.
    pub(crate) fn restore_dynamic_state(
        &mut self,
        candidates: &[Candidate],
        word_pos: u128,
        scores: Vec<i64>,
        rebuilds: u64,
    ) {
        self.update(candidates);
        self.rng.set_word_pos(word_pos);
        self.round_robin.set_scores(scores);
        self.rebuilds = rebuilds;
    }

    /// How many times derived state has been rebuilt (one per routable-set change).
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
    }

    /// Fingerprint of the current routable set and, for Maglev, of its table. Instances that
    /// share the selection key and see the same backends in the same states publish the same
    /// value, so operators can check that several instances agree.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Picks a backend among `candidates` for `request`, or `None` when no candidate
    /// qualifies (and, with `fail_open`, none is enabled either).
    ///
    /// Without exclusions the tier is the one [`Selector::update`] computed; with exclusions it
    /// is recomputed for this request, since excluding the last qualifying backend of a tier
    /// moves the request to the next tier. Allocation-free (except the first round-robin pick
    /// after the candidate list changed length without an update).
    pub fn select(&mut self, candidates: &[Candidate], request: SelectionRequest<'_>) -> Option<Selection> {
        let exclude = request.exclude;
        let prebuilt = exclude.is_empty() && candidates.len() == self.candidate_count;
        let tier = if prebuilt {
            self.routable.tier.filter(|tier| !tier.fail_open || request.fail_open)?
        } else {
            Tier::choose(candidates, exclude, false)
                .or_else(|| request.fail_open.then(|| Tier::choose(candidates, exclude, true)).flatten())?
        };
        let chosen = match self.algorithm {
            Algorithm::RoundRobin => self.round_robin.pick(candidates, tier, exclude),
            Algorithm::Random => self.weighted_draw(candidates, tier, exclude, prebuilt),
            Algorithm::LeastFlows => least_flows::pick(candidates, tier, exclude),
            Algorithm::PowerOfTwo => {
                let first = self.weighted_draw(candidates, tier, exclude, prebuilt)?;
                let second = self.weighted_draw(candidates, tier, exclude, prebuilt)?;
                Some(least_flows::lighter_of(candidates, first, second))
            }
            Algorithm::Hrw => {
                hrw::pick(&self.keys.rendezvous, candidates, tier, exclude, request.affinity_hash)
            }
            Algorithm::Maglev => self.maglev_pick(candidates, tier, exclude, request.affinity_hash),
        }?;
        let candidate = candidates.get(chosen)?;
        debug_assert!(tier.admits(candidate, exclude), "chose a candidate outside the tier");
        Some(Selection { candidate: chosen, backend: candidate.backend, fail_open: tier.fail_open })
    }

    /// One weighted random draw: by binary search over the prebuilt running weights when the
    /// tier is the routable one and nothing is excluded, else by a linear pass over the tier.
    fn weighted_draw(
        &mut self,
        candidates: &[Candidate],
        tier: Tier,
        exclude: &[BackendId],
        prebuilt: bool,
    ) -> Option<usize> {
        if prebuilt && Some(tier) == self.routable.tier {
            let member = random::draw_member(&mut self.rng, &self.cumulative_weights);
            let chosen = member.and_then(|m| self.routable.candidate_of(m));
            // A stale set (the caller changed a candidate without an update) falls back.
            if let Some(index) =
                chosen.filter(|&i| candidates.get(i).is_some_and(|c| tier.admits(c, exclude)))
            {
                return Some(index);
            }
        }
        random::draw_candidate(&mut self.rng, candidates, tier, exclude)
    }

    /// Maglev lookup when the request's tier is the one the table was built for; otherwise
    /// (a retry whose exclusions emptied the table's tier, or fail-open reached through
    /// exclusions) weighted rendezvous over the request's tier, which is consistent for the
    /// key and needs no table build on the datagram path.
    fn maglev_pick(
        &self,
        candidates: &[Candidate],
        tier: Tier,
        exclude: &[BackendId],
        affinity_hash: u64,
    ) -> Option<usize> {
        if Some(tier) == self.routable.tier {
            let found = self.maglev.lookup(affinity_hash, |member| {
                let index = self.routable.candidate_of(member)?;
                candidates.get(index).filter(|c| tier.admits(c, exclude)).map(|_| index)
            });
            if found.is_some() {
                return found;
            }
        }
        hrw::pick(&self.keys.rendezvous, candidates, tier, exclude, affinity_hash)
    }
}

/// Plain SipHash-1-3 with a zero key over the routable set and the table: the inputs are
/// already keyed hashes, and a fixed key lets anyone recompute it from a dump.
fn fingerprint(algorithm: Algorithm, routable: &RoutableSet, table: Option<&MaglevTable>) -> u64 {
    let mut hasher = SipHasher13::new_with_key(&[0; 16]);
    hasher.write(b"udplb/selection-fingerprint/v1");
    let algorithm_tag: u8 = match algorithm {
        Algorithm::RoundRobin => 1,
        Algorithm::Random => 2,
        Algorithm::LeastFlows => 3,
        Algorithm::PowerOfTwo => 4,
        Algorithm::Hrw => 5,
        Algorithm::Maglev => 6,
    };
    hasher.write(&[algorithm_tag]);
    match routable.tier {
        None => hasher.write(&[0]),
        Some(tier) => {
            hasher.write(&[1, u8::from(tier.backup), u8::from(tier.fail_open)]);
            hasher.write(&tier.pool.to_le_bytes());
        }
    }
    hasher.write(&(routable.members.len() as u64).to_le_bytes());
    for member in &routable.members {
        hasher.write(&member.identity.to_le_bytes());
        hasher.write(&member.weight.to_le_bytes());
    }
    if let Some(table) = table {
        table.hash_into(&mut hasher);
    }
    hasher.finish()
}
