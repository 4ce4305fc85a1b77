import Foundation

/// One document of a corpus, with its language tag.
public struct Document: Sendable {
    public var text: String
    public var language: String
    public init(text: String, language: String) { self.text = text; self.language = language }
}

/// How raw files are split into documents.
public enum CorpusFormat: String, Sendable, CaseIterable {
    /// Classic fortune files: entries separated by a line holding only `%`.
    case fortune
    /// Plain text: the whole file is one document, or documents separated by `--separator`.
    case text
    /// JSON Lines with a `text` field and an optional `lang` field.
    case jsonl
}

/// What reading a corpus left out, by reason, so that `data prepare` can report it.
public struct SkipReport: Sendable, Equatable {
    public var invalidUTF8Files: [String] = []
    public var invalidUTF8Documents = 0
    public var offensiveFiles: [String] = []
    public var emptyDocuments = 0
    public var replacedByUTF8Twin: [String] = []
    public init() {}
}

public enum CorpusReader {
    /// Splits a fortune file's text into entries (a line holding only `%` separates them).
    public static func fortuneEntries(_ text: String) -> [String] {
        var entries: [String] = []
        var current: [Substring] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line == "%" || line == "%\r" {
                entries.append(current.joined(separator: "\n"))
                current.removeAll()
            } else {
                current.append(line)
            }
        }
        entries.append(current.joined(separator: "\n"))
        return entries.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
    }

    /// Reads documents from one file.
    /// - Parameters:
    ///   - language: the tag for documents without their own (`lang` in JSON Lines).
    ///   - separator: for `.text`, a line that separates documents (nil: one document per file).
    /// - Throws: ``ModelError/io(path:reason:)`` when the file cannot be read, or when a JSON
    ///   line is malformed (naming the line).
    public static func read(
        _ url: URL, format: CorpusFormat, language: String, separator: String? = nil,
        skipped: inout SkipReport
    ) throws -> [Document] {
        let data: Data
        data = try FileIO.read(url, what: "corpus file")
        switch format {
        case .fortune, .text:
            guard let text = String(data: data, encoding: .utf8) else {
                skipped.invalidUTF8Files.append(url.path)
                return []
            }
            let parts: [String]
            if format == .fortune {
                parts = fortuneEntries(text)
            } else if let separator {
                parts = text.components(separatedBy: "\n\(separator)\n").map {
                    $0.trimmingCharacters(in: .whitespacesAndNewlines)
                }
            } else {
                parts = [text.trimmingCharacters(in: .whitespacesAndNewlines)]
            }
            skipped.emptyDocuments += parts.filter(\.isEmpty).count
            return parts.filter { !$0.isEmpty }.map { Document(text: $0, language: language) }
        case .jsonl:
            var docs: [Document] = []
            var lineNumber = 0
            for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
                lineNumber += 1
                if line.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) { continue }
                guard String(data: line, encoding: .utf8) != nil else { skipped.invalidUTF8Documents += 1; continue }
                guard let object = JSON.parse(Data(line))?.object, let text = object["text"]?.string else {
                    throw ModelError.io(
                        path: "\(url.path):\(lineNumber)", reason: "expected a JSON object with a string \"text\" field"
                    )
                }
                if text.isEmpty { skipped.emptyDocuments += 1; continue }
                docs.append(Document(text: text, language: object["lang"]?.string ?? language))
            }
            return docs
        }
    }

    /// The Debian fortune packages of the default corpus and their languages.
    public static let debianFortunePackages: [(package: String, language: String)] = [
        ("fortunes", "en"), ("fortunes-de", "de"), ("fortunes-es", "es"), ("fortunes-it", "it"),
        ("fortunes-br", "pt"), ("fortunes-pl", "pl"), ("fortunes-cs", "cs"), ("fortunes-ru", "ru"),
        ("fortunes-bg", "bg"), ("fortunes-zh", "zh"), ("fortunes-eo", "eo"), ("fortunes-ga", "ga")
    ]

    /// The fortune files each installed package owns (from `dpkg -L`), language from the
    /// package. Leaves out `.dat` indexes, symlinks, offensive sections (any `off` directory),
    /// symlinks (the `.u8` names are mostly links to the same file), and a file whose UTF-8 twin
    /// (`NAME.u8`) is a non-empty file of its own (the original is then in a legacy encoding;
    /// `fortunes-pl` ships empty `.u8` placeholders beside UTF-8 originals, which are kept).
    /// - Throws: ``ModelError/io(path:reason:)`` naming a package that is not installed.
    public static func debianFortuneFiles(skipped: inout SkipReport) throws -> [(URL, String)] {
        var result: [(URL, String)] = []
        for (package, language) in debianFortunePackages {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/dpkg")
            process.arguments = ["-L", package]
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            try process.run()
            let output = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                throw ModelError.io(
                    path: package,
                    reason: "Debian package not installed (run scripts/setup.sh, or apt-get install \(package))")
            }
            let paths = String(decoding: output, as: UTF8.self).split(separator: "\n").map(String.init)
                .filter { $0.contains("/games/fortunes/") && !$0.hasSuffix(".dat") }
            let selected = selectFortuneFiles(
                paths, skipped: &skipped,
                isRegularFile: { path in
                    var isDirectory: ObjCBool = false
                    return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
                        && !isDirectory.boolValue
                        && (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) == nil
                },
                size: { ((try? FileManager.default.attributesOfItem(atPath: $0))?[.size] as? NSNumber)?.intValue ?? 0 })
            result += selected.map { (URL(fileURLWithPath: $0), language) }
        }
        return result
    }

    /// The rule of ``debianFortuneFiles(skipped:)`` on a package's file list: regular files only
    /// (no symlinks, no `.dat`), no `off` directory, the UTF-8 twin `NAME.u8` instead of `NAME`
    /// when the twin is a non-empty file, and never an empty `.u8` placeholder.
    public static func selectFortuneFiles(
        _ paths: [String], skipped: inout SkipReport,
        isRegularFile: (String) -> Bool, size: (String) -> Int
    ) -> [String] {
        var result: [String] = []
        for path in paths.sorted() where !path.hasSuffix(".dat") {
            guard isRegularFile(path) else { continue }
            if path.split(separator: "/").contains("off") { skipped.offensiveFiles.append(path); continue }
            if isRegularFile(path + ".u8"), size(path + ".u8") > 0 { skipped.replacedByUTF8Twin.append(path); continue }
            if path.hasSuffix(".u8"), size(path) == 0 { continue } // fortunes-pl ships empty .u8 placeholders
            result.append(path)
        }
        return result
    }
}
