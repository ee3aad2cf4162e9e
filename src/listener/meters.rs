//! What every listener counts, labelled by listener name (`grpc`, `health`, `pki`, `oauth`) and a fixed reason. The
//! families are made here and registered in the server's one registry by `metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerReasonLabels {
    pub listener: &'static str,
    pub reason: &'static str,
}

/// Connection counters of all listeners. Cheap to clone (the families are shared); the default counts into families
/// no registry exports (tests, embedders without metrics).
#[derive(Clone, Default)]
pub struct Meters {
    open: Family<ListenerLabels, Gauge>,
    accepted: Family<ListenerLabels, Counter>,
    shed: Family<ListenerReasonLabels, Counter>,
    refused: Family<ListenerReasonLabels, Counter>,
}

/// Names of the listeners principald opens, for series that exist before the first event.
pub const LISTENERS: [&str; 4] = ["grpc", "health", "pki", "oauth"];

impl Meters {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("connections_open", "open connections by listener", self.open.clone());
        registry.register("connections_accepted", "connections accepted by listener", self.accepted.clone());
        registry.register(
            "connections_shed",
            "connections closed to admit a newer one when a cap was reached, by listener and cap \
             (connection_cap, handshake_cap, anonymous_cap)",
            self.shed.clone(),
        );
        registry.register(
            "connections_refused",
            "new connections closed at once, by listener and reason",
            self.refused.clone(),
        );
        for listener in LISTENERS {
            drop(self.open.get_or_create(&ListenerLabels { listener }));
            drop(self.accepted.get_or_create(&ListenerLabels { listener }));
            for reason in ["connection_cap", "handshake_cap", "anonymous_cap"] {
                drop(self.shed.get_or_create(&ListenerReasonLabels { listener, reason }));
            }
        }
    }

    pub(super) fn opened(&self, listener: &'static str) {
        self.open.get_or_create(&ListenerLabels { listener }).inc();
        self.accepted.get_or_create(&ListenerLabels { listener }).inc();
    }

    pub(super) fn closed(&self, listener: &'static str) {
        self.open.get_or_create(&ListenerLabels { listener }).dec();
    }

    pub(super) fn shed(&self, listener: &'static str, reason: &'static str) {
        self.shed.get_or_create(&ListenerReasonLabels { listener, reason }).inc();
    }

    pub(super) fn refused(&self, listener: &'static str, reason: &'static str) {
        self.refused.get_or_create(&ListenerReasonLabels { listener, reason }).inc();
    }
}
