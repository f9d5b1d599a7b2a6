//! Kafka messaging with consumer groups, retries and a dead-letter queue.
//!
//! `maas-queue` decouples work through Kafka. It builds on the pure-Rust `rskafka` client
//! and adds what that client leaves out:
//!
//! * a **producer** with Kafka's default (murmur2) partitioner, batching and acknowledged
//!   sends;
//! * **consumer groups**: members of a group share a topic's partitions through Kafka's own
//!   group protocol and commit offsets only after records were handled;
//! * a **failure policy**: retries, retry topics and a **dead-letter queue** whose headers
//!   say where each record came from and why it failed, with redrive;
//! * **lag** per partition, as an API and as metrics.
//!
//! The crate is young: the items described here land one by one, and this page lists the
//! ones that exist.
