//! Port-per-broker address translation.
//!
//! The proxy listens on one bootstrap port and on one port per upstream broker. The port for a
//! broker is `broker_port_base + node_id`, so it is the same on every proxy instance and across
//! restarts, and firewall rules can be written ahead of time. By default `broker_port_base` is
//! the bootstrap port + 1: with a bootstrap on 9092, node 0 is on 9093, node 1 on 9094, and a
//! broker that reports itself as node 111 (Tansu does) on 9204.
//!
//! [`Routes`] remembers where each node really is, learnt from the Metadata, FindCoordinator and
//! DescribeCluster responses the proxy rewrites, so a connection to a broker port reaches the
//! right broker.

use std::{collections::HashMap, sync::RwLock};

use crate::error::Error;

/// The deterministic node id -> proxy port mapping.
#[derive(Debug, Clone, Copy)]
pub struct PortMap {
    /// The proxy port of node 0.
    pub base: u16,
}

impl PortMap {
    pub fn port_for(&self, node: i32) -> Result<u16, Error> {
        let port = i64::from(self.base) + i64::from(node);
        if node < 0 {
            return Err(Error::PortMapping {
                node,
                reason: "negative node ids have no port".into(),
            });
        }
        u16::try_from(port).map_err(|_| Error::PortMapping {
            node,
            reason: format!(
                "{} + {node} is past port 65535; lower --broker-port-base",
                self.base
            ),
        })
    }
}

/// Where each upstream node really is.
#[derive(Debug, Default)]
pub struct Routes {
    by_node: RwLock<HashMap<i32, String>>,
}

impl Routes {
    /// Records `node`'s upstream address; returns true if it is new or changed.
    pub fn record(&self, node: i32, host: &str, port: i32) -> bool {
        let addr = format!("{host}:{port}");
        let mut map = self.by_node.write().unwrap_or_else(|p| p.into_inner());
        map.insert(node, addr.clone()).as_deref() != Some(addr.as_str())
    }

    pub fn upstream_of(&self, node: i32) -> Option<String> {
        let map = self.by_node.read().unwrap_or_else(|p| p.into_inner());
        map.get(&node).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_base_plus_node_id_and_bounded() {
        let map = PortMap { base: 9093 };
        assert_eq!(map.port_for(0).unwrap(), 9093);
        assert_eq!(map.port_for(111).unwrap(), 9204);
        assert!(matches!(
            map.port_for(-1),
            Err(Error::PortMapping { node: -1, .. })
        ));
        assert!(matches!(
            map.port_for(60_000),
            Err(Error::PortMapping { .. })
        ));
    }

    #[test]
    fn routes_report_changes() {
        let routes = Routes::default();
        assert!(routes.record(1, "b1", 9092));
        assert!(!routes.record(1, "b1", 9092));
        assert!(routes.record(1, "b1-new", 9092));
        assert_eq!(routes.upstream_of(1).as_deref(), Some("b1-new:9092"));
        assert_eq!(routes.upstream_of(2), None);
    }
}
