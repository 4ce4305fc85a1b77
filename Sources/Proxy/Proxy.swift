import Model

/// Importance scores, pruning and distillation (issue: Proxy). Not built yet.
public enum Proxy {}
