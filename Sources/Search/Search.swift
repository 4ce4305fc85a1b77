import Proxy

/// Search spaces, accounting, strategies and the study store (issue: Search). Not built yet.
public enum Search {}
