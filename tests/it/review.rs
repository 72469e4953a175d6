//! Adversarial review: scenarios that lead to a wrong verdict.
