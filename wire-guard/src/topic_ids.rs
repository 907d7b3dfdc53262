//! Topic ids to names, learnt from the Metadata responses that pass through. Fetch v13 and
//! later name topics only by id; the fetch stage needs the name to find the topic's policy.
//! Clients ask for metadata before they fetch (to find each partition's leader), so the id of
//! every topic a client fetches has passed through here first; an id not seen is refused, so
//! the client refreshes its metadata and fetches again.

use std::{collections::HashMap, sync::RwLock};

use kafka_protocol::messages::MetadataResponse;
use uuid::Uuid;

/// More names than any cluster has topics; beyond it the map starts again from the responses
/// that follow, rather than growing without bound.
const MAX_TOPICS: usize = 1_000_000;

#[derive(Debug, Default)]
pub struct TopicIds(RwLock<HashMap<Uuid, String>>);

impl TopicIds {
    /// Records the id of every topic the response names.
    pub fn learn(&self, response: &MetadataResponse) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        for topic in &response.topics {
            if topic.topic_id.is_nil() {
                continue;
            }
            if let Some(name) = &topic.name {
                if map.len() >= MAX_TOPICS && !map.contains_key(&topic.topic_id) {
                    map.clear();
                }
                map.insert(topic.topic_id, name.to_string());
            }
        }
    }

    pub fn name(&self, id: &Uuid) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::{
        messages::{TopicName, metadata_response::MetadataResponseTopic},
        protocol::StrBytes,
    };

    use super::*;

    #[test]
    fn ids_seen_in_metadata_resolve_to_names() {
        let id = Uuid::from_u128(7);
        let mut response = MetadataResponse::default();
        let mut topic = MetadataResponseTopic::default();
        topic.topic_id = id;
        topic.name = Some(TopicName(StrBytes::from_static_str("payments")));
        response.topics.push(topic);
        let ids = TopicIds::default();
        assert_eq!(ids.name(&id), None);
        ids.learn(&response);
        assert_eq!(ids.name(&id).as_deref(), Some("payments"));
        assert_eq!(ids.name(&Uuid::from_u128(8)), None);
    }
}
