//! Types and rules of `billing`, free of I/O: money, what each kind of
//! movement posts to which accounts, per-minute metering, orders'
//! state machine, providers' webhook signatures, billing rules (prices explained step by step), and
//! invoices' months, numbers and tax.

pub mod invoice;
pub mod metering;
pub mod money;
pub mod order;
pub mod payment;
pub mod posting;
pub mod rules;
