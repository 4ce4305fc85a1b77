/// Every candidate of the space, once, at proxy.steps.
public struct Grid: SearchStrategy {
    public var name: String { "grid" }
}
