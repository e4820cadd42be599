//! A scenario run against a user's own configuration file (`udplb-sim run --config FILE`):
//! the rule that ties the scenario's `[[backend]]` hosts to the backends the file lists.
//!
//! The rule is by address, as the balancer itself sees backends: every backend the file lists
//! must have a `[[backend]]` host at exactly its address (otherwise it would send to a host that
//! does not exist, and the scenario would test nothing about it); and a host named like one of
//! the file's backends must be at that backend's address, so that `kill h3-a` can never kill
//! another backend's host. No mapping is offered: a scenario written for a deployment uses
//! the deployment's addresses.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::Scenario;

/// Where a mismatch is and what it is: in the scenario's text or in the configuration's.
pub(super) enum Mismatch {
    InScenario(Option<Range<usize>>, String),
    InConfig(Option<Range<usize>>, String),
}

/// Checks that the scenario's hosts (in the file `file`, whose text is `text`) stand where its
/// configuration (the file `config_file`, whose text is `config_text`) puts its backends.
pub(super) fn check_addresses(
    scenario: &Scenario,
    (file, text): (&str, &str),
    (config_file, config_text): (&str, &str),
) -> Result<(), Mismatch> {
    for (cluster_name, cluster) in &scenario.lb.clusters {
        for (index, backend) in cluster.backends.iter().enumerate() {
            let named = scenario.backends.iter().position(|host| host.name == backend.id);
            if let Some(host_index) = named
                && scenario.backends[host_index].address != backend.address
            {
                let message = format!(
                    "[[backend]] `{}` is at {}, but {config_file} puts backend `{}` at {}: a host \
                     named as a backend must be at that backend's address",
                    backend.id, scenario.backends[host_index].address, backend.id, backend.address
                );
                return Err(Mismatch::InScenario(host_address_span(text, host_index), message));
            }
            if !scenario.backends.iter().any(|host| host.address == backend.address) {
                let message = format!(
                    "backend `{}` is at {}, and {file} has no [[backend]] host at that address",
                    backend.id, backend.address
                );
                let span = config_backend_span(config_text, cluster_name, index);
                return Err(Mismatch::InConfig(span, message));
            }
        }
    }
    Ok(())
}

/// The span of the `address` of the scenario's `index`th `[[backend]]`.
fn host_address_span(text: &str, index: usize) -> Option<Range<usize>> {
    let root = DeTable::parse(text).ok()?;
    let DeValue::Array(hosts) = root.get_ref().get("backend")?.get_ref() else { return None };
    let DeValue::Table(host) = hosts.get(index)?.get_ref() else { return None };
    host.get("address").map(|address| address.span())
}

/// The span of the address of backend `index` of cluster `cluster` in the configuration's text
/// (the backend's own table when it has no address key, which validation would have refused).
fn config_backend_span(text: &str, cluster: &str, index: usize) -> Option<Range<usize>> {
    let root = DeTable::parse(text).ok()?;
    let DeValue::Table(clusters) = root.get_ref().get("clusters")?.get_ref() else { return None };
    let DeValue::Table(cluster) = clusters.get(cluster)?.get_ref() else { return None };
    let DeValue::Array(backends) = cluster.get("backends")?.get_ref() else { return None };
    let backend = backends.get(index)?;
    match backend.get_ref() {
        DeValue::Table(table) => table.get("address").map(|a| a.span()).or(Some(backend.span())),
        _ => Some(backend.span()),
    }
}
