//! Second adversarial review: looker-push and looker-gen against their
//! contract.
