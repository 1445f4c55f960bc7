//! Azure Resource Manager + Entra ID simulator.
