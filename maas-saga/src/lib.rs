//! Distributed transactions for services that span several databases: Saga and TCC.
//!
//! `maas-saga` runs a business operation made of steps owned by different services so that
//! it ends either fully applied or fully compensated, whatever crashes in between:
//!
//! * a **Saga** runs local transactions T1 → T2 → T3 and, when one fails, the compensations
//!   of those already applied in reverse order (C2 → C1);
//! * a **TCC** transaction reserves resources in every branch (*try*), then applies them
//!   all (*confirm*) or releases them all (*cancel*).
//!
//! Participants are `tower::Service`s or HTTP endpoints; the engine records its intent
//! durably before the first side effect and recovers unfinished transactions after a crash.
//!
//! The crate is young: the items described here land one by one, and this page lists the
//! ones that exist.
