import Foundation

/// Escapes text for HTML and SVG.
public func htmlEscape(_ s: String) -> String {
    var out = ""
    for c in s {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&#39;"
        default: out.append(c)
        }
    }
    return out
}

/// A small inline-SVG chart: a plotting area with linear axes, "nice" ticks, labels with units,
/// and primitives (points with error bars, lines, rectangles) in data coordinates. Every element
/// carries a class so that tests (and readers of the source) can count what was drawn.
struct SVGPlot {
    let id: String
    let width = 640.0, height = 360.0
    let left = 70.0, right = 20.0, top = 20.0, bottom = 50.0
    var xRange: ClosedRange<Double>
    var yRange: ClosedRange<Double>
    var xLabel: String
    var yLabel: String
    var body: [String] = []
    /// Larger values drawn lower (ranks: 1 at the top).
    var invertY = false
    /// Only whole-number ticks on the y axis.
    var integerY = false

    init(id: String, x: ClosedRange<Double>, y: ClosedRange<Double>, xLabel: String, yLabel: String, pad: Double = 0.05)
    {
        self.id = id
        func padded(_ r: ClosedRange<Double>) -> ClosedRange<Double> {
            let span = r.upperBound - r.lowerBound
            let p = span > 0 ? span * pad : max(abs(r.lowerBound) * 0.05, 0.5)
            return (r.lowerBound - p)...(r.upperBound + p)
        }
        xRange = padded(x)
        yRange = padded(y)
        self.xLabel = xLabel
        self.yLabel = yLabel
    }

    func px(_ x: Double) -> Double {
        left + (x - xRange.lowerBound) / (xRange.upperBound - xRange.lowerBound) * (width - left - right)
    }
    func py(_ y: Double) -> Double {
        let f = (y - yRange.lowerBound) / (yRange.upperBound - yRange.lowerBound)
        return invertY ? top + f * (height - top - bottom) : height - bottom - f * (height - top - bottom)
    }

    /// About five round tick values across a range.
    static func ticks(_ r: ClosedRange<Double>, count: Int = 5) -> [Double] {
        let span = r.upperBound - r.lowerBound
        guard span > 0, span.isFinite else { return [r.lowerBound] }
        let raw = span / Double(count)
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2.0, 2.5, 5.0, 10.0].map { $0 * magnitude }.first { $0 >= raw } ?? raw
        var t = (r.lowerBound / step).rounded(.up) * step
        var out: [Double] = []
        while t <= r.upperBound + step * 1e-9 { out.append(t); t += step }
        return out
    }

    /// Tick labels with as many decimals as their step needs and no more ("50", not "50.00";
    /// "1.70", "1.75"; "1.20M"), all alike.
    static func formatTicks(_ ticks: [Double]) -> [String] {
        guard ticks.count >= 2 else { return ticks.map(format) }
        let top = ticks.map(abs).max() ?? 0
        let (scale, suffix) = top >= 1e6 ? (1e6, "M") : top >= 1e4 ? (1e3, "K") : (1.0, "")
        let step = abs(ticks[1] - ticks[0]) / scale
        var decimals = 0
        func scaled() -> Double { step * pow(10, Double(decimals)) }
        while decimals < 6 && abs(scaled().rounded() - scaled()) > 1e-6 * max(1, scaled()) { decimals += 1 }
        return ticks.map { abs($0) < 1e-12 * max(1, top) ? "0" : String(format: "%.\(decimals)f", $0 / scale) + suffix }
    }

    static func format(_ v: Double) -> String {
        let a = abs(v)
        if a < 1e-9 { return "0" }
        if a >= 1e6 { return String(format: "%.2fM", v / 1e6) }
        if a >= 1e4 { return String(format: "%.0fK", v / 1e3) }
        if a >= 100 { return String(format: "%.0f", v) }
        if a >= 1 { return String(format: "%.2f", v) }
        return String(format: "%.3f", v)
    }

    mutating func point(
        _ x: Double, _ y: Double, radius: Double = 4, cls: String, title: String, link: String? = nil,
        errorBar: (Double, Double)? = nil, data: [String: String] = [:]
    ) {
        var s = ""
        if let (lo, hi) = errorBar {
            s += String(
                format: "<line class=\"errorbar\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", px(x), py(lo),
                px(x), py(hi))
        }
        let attributes = data.sorted { $0.key < $1.key }.map { " data-\($0.key)=\"\(htmlEscape($0.value))\"" }.joined()
        let circle =
            String(format: "<circle class=\"%@\" cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\"", cls, px(x), py(y), radius)
            + attributes + "><title>\(htmlEscape(title))</title></circle>"
        s += link.map { "<a href=\"\(htmlEscape($0))\">\(circle)</a>" } ?? circle
        body.append(s)
    }

    mutating func line(_ points: [(Double, Double)], cls: String, title: String? = nil, data: [String: String] = [:]) {
        guard !points.isEmpty else { return }
        let d = points.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }.joined(separator: " ")
        let attributes = data.sorted { $0.key < $1.key }.map { " data-\($0.key)=\"\(htmlEscape($0.value))\"" }.joined()
        body.append(
            "<polyline class=\"\(cls)\" points=\"\(d)\"\(attributes)>"
                + (title.map { "<title>\(htmlEscape($0))</title>" } ?? "") + "</polyline>")
    }

    mutating func horizontalMarker(_ y: Double, label: String, cls: String) {
        body.append(
            String(
                format: "<line class=\"%@\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", cls, left, py(y),
                width - right, py(y))
                + String(format: "<text class=\"marker-label\" x=\"%.1f\" y=\"%.1f\">", left + 4, py(y) - 4)
                + htmlEscape(label) + "</text>")
    }

    mutating func bar(x0: Double, x1: Double, y: Double, cls: String, title: String) {
        let base = max(yRange.lowerBound, 0)
        let (a, b) = (py(max(y, base)), py(min(y, base)))
        body.append(
            String(
                format: "<rect class=\"%@\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"><title>", cls, px(x0),
                a, max(0.5, px(x1) - px(x0)), max(0.5, b - a))
                + htmlEscape(title) + "</title></rect>")
    }

    /// The finished `<svg>`: axes with ticks and labels, then the body.
    func render(xTicks: [Double]? = nil, xTickLabels: [String]? = nil) -> String {
        var s = String(
            format:
                "<svg id=\"%@\" class=\"plot\" viewBox=\"0 0 %.0f %.0f\" width=\"%.0f\" height=\"%.0f\" "
                + "role=\"img\" xmlns=\"http://www.w3.org/2000/svg\">",
            id, width, height, width, height)
        s += String(
            format: "<rect class=\"frame\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>", left, top,
            width - left - right, height - top - bottom)
        let xs = xTicks ?? Self.ticks(xRange)
        let xLabels = Self.formatTicks(xs)
        for (i, t) in xs.enumerated() where xRange.contains(t) {
            let label = xTickLabels.map { i < $0.count ? $0[i] : "" } ?? xLabels[i]
            s += String(
                format: "<line class=\"tick\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", px(t),
                height - bottom, px(t), height - bottom + 5)
            s +=
                String(
                    format: "<text class=\"tick-label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", px(t),
                    height - bottom + 18) + htmlEscape(label) + "</text>"
        }
        let yTicks = (integerY ? Self.ticks(yRange).filter { $0 == $0.rounded() } : Self.ticks(yRange)).filter(
            yRange.contains)
        for (t, label) in zip(yTicks, Self.formatTicks(yTicks)) {
            s += String(
                format: "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", left, py(t),
                width - right, py(t))
            s +=
                String(
                    format: "<text class=\"tick-label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">", left - 6, py(t) + 4
                ) + label + "</text>"
        }
        s +=
            String(
                format: "<text class=\"axis-label\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">",
                left + (width - left - right) / 2, height - 8) + htmlEscape(xLabel) + "</text>"
        s +=
            String(
                format:
                    "<text class=\"axis-label\" transform=\"translate(16 %.1f) rotate(-90)\" text-anchor=\"middle\">",
                top + (height - top - bottom) / 2)
            + htmlEscape(yLabel) + "</text>"
        return s + body.joined() + "</svg>"
    }
}
