//! Rewriting the responses that carry broker addresses, so a client never sees one.
//!
//! Metadata (brokers), FindCoordinator (the single coordinator before v4, the batch from v4)
//! and DescribeCluster (brokers) are decoded, each address replaced by the proxy's advertised
//! host and the broker's proxy port, and re-encoded. Everything else in them, tagged fields
//! included, is kept as received. DescribeConfigs answers carry listener addresses inside
//! configuration values; those values are withheld, marked sensitive as Kafka marks secrets.
//! (DescribeQuorum's node listeners are kept out by advertising only versions without them, see
//! [`crate::versions`].)

use kafka_protocol::{
    messages::{
        DescribeClusterResponse, DescribeConfigsResponse, FindCoordinatorResponse, MetadataResponse,
    },
    protocol::StrBytes,
};

use crate::error::Error;

/// Translates an upstream broker address into the address clients must use.
pub trait AddressBook {
    /// Records that `node` is at `host:port` upstream and returns its proxy address.
    fn translate(&self, node: i32, host: &str, port: i32) -> Result<(StrBytes, i32), Error>;
}

pub fn metadata(response: &mut MetadataResponse, book: &impl AddressBook) -> Result<(), Error> {
    for broker in &mut response.brokers {
        (broker.host, broker.port) = book.translate(broker.node_id.0, &broker.host, broker.port)?;
    }
    Ok(())
}

pub fn find_coordinator(
    response: &mut FindCoordinatorResponse,
    version: i16,
    book: &impl AddressBook,
) -> Result<(), Error> {
    if version < 4 {
        // On error the coordinator fields hold node -1 and no address: nothing to hide.
        if response.node_id.0 >= 0 {
            (response.host, response.port) =
                book.translate(response.node_id.0, &response.host, response.port)?;
        }
        return Ok(());
    }
    for c in &mut response.coordinators {
        if c.node_id.0 >= 0 {
            (c.host, c.port) = book.translate(c.node_id.0, &c.host, c.port)?;
        }
    }
    Ok(())
}

pub fn describe_cluster(
    response: &mut DescribeClusterResponse,
    book: &impl AddressBook,
) -> Result<(), Error> {
    for broker in &mut response.brokers {
        (broker.host, broker.port) =
            book.translate(broker.broker_id.0, &broker.host, broker.port)?;
    }
    Ok(())
}

/// Broker configurations whose values name hosts and ports.
fn names_addresses(config: &str) -> bool {
    config.ends_with("listeners")
        || config.starts_with("controller.quorum.")
            && (config.ends_with(".voters") || config.ends_with(".bootstrap.servers"))
}

pub fn describe_configs(response: &mut DescribeConfigsResponse) -> Result<(), Error> {
    for config in response.results.iter_mut().flat_map(|r| &mut r.configs) {
        if names_addresses(&config.name) {
            config.value = None;
            config.is_sensitive = true;
            for synonym in &mut config.synonyms {
                synonym.value = None;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use kafka_protocol::messages::{
        BrokerId, describe_cluster_response::DescribeClusterBroker,
        find_coordinator_response::Coordinator, metadata_response::MetadataResponseBroker,
    };

    use super::*;

    #[derive(Default)]
    struct Book(RefCell<Vec<(i32, String, i32)>>);

    impl AddressBook for Book {
        fn translate(&self, node: i32, host: &str, port: i32) -> Result<(StrBytes, i32), Error> {
            self.0.borrow_mut().push((node, host.to_owned(), port));
            if node > 1000 {
                return Err(Error::PortMapping {
                    node,
                    reason: "test".into(),
                });
            }
            Ok((StrBytes::from_static_str("proxy"), 20_000 + node))
        }
    }

    #[test]
    fn metadata_brokers_are_translated() {
        let mut r = MetadataResponse::default();
        for (id, host) in [(1, "b1"), (2, "b2")] {
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(id);
            b.host = StrBytes::from_static_str(host);
            b.port = 9092;
            r.brokers.push(b);
        }
        let book = Book::default();
        metadata(&mut r, &book).unwrap();
        assert!(r.brokers.iter().all(|b| &*b.host == "proxy"));
        assert_eq!(r.brokers[1].port, 20_002);
        assert_eq!(book.0.borrow()[0], (1, "b1".into(), 9092));
    }

    #[test]
    fn find_coordinator_old_and_batched_and_errors() {
        let book = Book::default();
        let mut old = FindCoordinatorResponse::default();
        old.node_id = BrokerId(3);
        old.host = StrBytes::from_static_str("b3");
        old.port = 9092;
        find_coordinator(&mut old, 3, &book).unwrap();
        assert_eq!((&*old.host, old.port), ("proxy", 20_003));

        let mut failed = FindCoordinatorResponse::default();
        failed.node_id = BrokerId(-1);
        failed.port = -1;
        find_coordinator(&mut failed, 2, &book).unwrap();
        assert_eq!(failed.port, -1);

        let mut batched = FindCoordinatorResponse::default();
        for id in [4, -1] {
            let mut c = Coordinator::default();
            c.node_id = BrokerId(id);
            c.host = StrBytes::from_static_str("b4");
            c.port = 9092;
            batched.coordinators.push(c);
        }
        find_coordinator(&mut batched, 4, &book).unwrap();
        assert_eq!(batched.coordinators[0].port, 20_004);
        assert_eq!(&*batched.coordinators[1].host, "b4");
    }

    #[test]
    fn listener_addresses_in_broker_configs_are_withheld() {
        use kafka_protocol::messages::describe_configs_response::{
            DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
        };
        let config = |name: &'static str, value: &'static str| {
            let mut c = DescribeConfigsResourceResult::default();
            c.name = StrBytes::from_static_str(name);
            c.value = Some(StrBytes::from_static_str(value));
            let mut synonym = DescribeConfigsSynonym::default();
            synonym.value = c.value.clone();
            c.synonyms.push(synonym);
            c
        };
        let mut result = DescribeConfigsResult::default();
        result.configs = vec![
            config("advertised.listeners", "PLAINTEXT://b1.internal:9092"),
            config("listeners", "PLAINTEXT://0.0.0.0:9092"),
            config("controller.quorum.voters", "1@c1.internal:9093"),
            config("log.retention.ms", "604800000"),
        ];
        let mut response = DescribeConfigsResponse::default();
        response.results.push(result);
        describe_configs(&mut response).unwrap();
        let configs = &response.results[0].configs;
        for c in &configs[..3] {
            assert_eq!(c.value, None, "{}", c.name);
            assert!(c.is_sensitive);
            assert_eq!(c.synonyms[0].value, None);
        }
        assert_eq!(configs[3].value.as_deref(), Some("604800000"));
        assert!(!configs[3].is_sensitive);
    }

    #[test]
    fn untranslatable_broker_fails_the_rewrite() {
        let mut r = DescribeClusterResponse::default();
        let mut b = DescribeClusterBroker::default();
        b.broker_id = BrokerId(5000);
        r.brokers.push(b);
        assert!(describe_cluster(&mut r, &Book::default()).is_err());
    }
}
