import ArgumentParser
import Foundation
import Model

struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Prepare corpora as packed token shards and describe them.",
        subcommands: [DataPrepare.self, DataInfo.self])
}

struct DataPrepare: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prepare",
        abstract: "Turn raw text into packed token shards with a document index, language tags and a validation split.",
        discussion: """
            Inputs are files or directories (read recursively), each optionally tagged with a language as \
            PATH=LANG. --debian-fortunes reads the twelve Debian fortune packages of the default corpus \
            (language from the package; offensive sections and invalid UTF-8 left out and counted).
            Examples:
              topiary data prepare --debian-fortunes --out data/fortunes
              topiary data prepare --format jsonl corpus.jsonl --out data/mine --tokenizer tokenizer.json
              topiary data prepare --format text --separator '<doc>' en.txt=en de.txt=de --out data/mine
            """)

    @Argument(help: "Input files or directories, as PATH or PATH=LANG.") var inputs: [String] = []
    @Flag(help: "Read the Debian fortune packages of the default corpus.") var debianFortunes = false
    @Option(help: "Input format: fortune, text or jsonl.") var format: String = "fortune"
    @Option(help: "For --format text: a line that separates documents (default: one document per file).") var separator:
        String?
    @Option(help: "Language for inputs without one.") var language = "und"
    @Option(help: "`byte` or a Hugging Face tokenizer.json.") var tokenizer = "byte"
    @Option(parsing: .unconditional, help: "Fraction of each language's documents held out for validation.")
    var validationFraction = 0.05
    @Option(parsing: .unconditional, help: "Seed for the validation split.") var seed: UInt64 = 0
    @Option(help: "Output directory.") var out: String
    @Flag(help: "Replace an existing output directory.") var force = false

    func validate() throws {
        guard CorpusFormat(rawValue: format) != nil else {
            throw ValidationError("--format must be fortune, text or jsonl")
        }
        guard debianFortunes || !inputs.isEmpty else { throw ValidationError("give input files, or --debian-fortunes") }
        guard validationFraction > 0 && validationFraction < 1 else {
            throw ValidationError("--validation-fraction must be in (0, 1)")
        }
    }

    func run() throws {
        // The output is never an input (nor inside one, nor holding one): --force would delete it.
        var named = inputs.map { ("input", fileURL(String($0.split(separator: "=", maxSplits: 1)[0]))) }
        if tokenizer != "byte" { named.append(("--tokenizer", fileURL(tokenizer))) }
        try OutputDirectory.check(directoryURL(out), inputs: named, force: force)
        let tok = try loadTokenizer(tokenizer)
        var skipped = SkipReport()
        var files: [(URL, String, CorpusFormat)] = []
        if debianFortunes {
            files += try CorpusReader.debianFortuneFiles(skipped: &skipped).map { ($0.0, $0.1, .fortune) }
        }
        let fm = FileManager.default
        for input in inputs {
            let parts = input.split(separator: "=", maxSplits: 1).map(String.init)
            let path = parts[0], lang = parts.count > 1 ? parts[1] : language
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: path, isDirectory: &isDirectory) else {
                throw ModelError.io(path: path, reason: "does not exist")
            }
            if isDirectory.boolValue {
                let items = (fm.enumerator(atPath: path)?.allObjects as? [String] ?? []).sorted()
                for item in items {
                    var isDir: ObjCBool = false
                    let full = (path as NSString).appendingPathComponent(item)
                    if fm.fileExists(atPath: full, isDirectory: &isDir), !isDir.boolValue, !item.hasSuffix(".dat") {
                        files.append((URL(fileURLWithPath: full), lang, CorpusFormat(rawValue: format)!))
                    }
                }
            } else {
                files.append((URL(fileURLWithPath: path), lang, CorpusFormat(rawValue: format)!))
            }
        }
        var documents: [Document] = []
        for (url, lang, fmt) in files {
            documents += try CorpusReader.read(
                url, format: fmt, language: lang, separator: separator, skipped: &skipped)
        }
        print("read \(documents.count) documents from \(files.count) files")
        if !skipped.invalidUTF8Files.isEmpty {
            print(
                "skipped \(skipped.invalidUTF8Files.count) files that are not valid UTF-8: "
                    + "\(skipped.invalidUTF8Files.map { ($0 as NSString).lastPathComponent }.joined(separator: ", "))"
            )
        }
        if skipped.invalidUTF8Documents > 0 {
            print("skipped \(skipped.invalidUTF8Documents) JSON lines that are not valid UTF-8")
        }
        if !skipped.offensiveFiles.isEmpty { print("left out \(skipped.offensiveFiles.count) offensive files") }
        if !skipped.replacedByUTF8Twin.isEmpty {
            print("used the UTF-8 twin (.u8) instead of \(skipped.replacedByUTF8Twin.count) legacy-encoded files")
        }
        if skipped.emptyDocuments > 0 { print("skipped \(skipped.emptyDocuments) empty documents") }
        print("document separator: \(tok.endOfTextDescription)")
        _ = try ShardWriter.write(
            documents: documents, tokenizer: tok, to: directoryURL(out),
            validationFraction: validationFraction, seed: seed, overwrite: force, skipped: skipped)
        print("wrote \(out)")
        try DataInfo.printTable(TokenShards(directory: directoryURL(out)))
    }
}

struct DataInfo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info", abstract: "Documents, bytes and tokens per language and split of a prepared corpus.")

    @Argument(help: "Prepared corpus directory.") var directory: String
    @Flag(help: "Print JSON (the corpus manifest).") var json = false

    func run() throws {
        let shards = try TokenShards(directory: directoryURL(directory))
        if json { printJSON(shards.manifest); return }
        try Self.printTable(shards)
    }

    static func printTable(_ shards: TokenShards) throws {
        print("tokenizer \(shards.tokenizerName), vocabulary \(shards.vocabularySize)")
        print("language  split        documents        bytes       tokens")
        var totals: [String: (Int, Int, Int)] = [:]
        for lang in shards.languages {
            for split in TokenShards.splits {
                let s = shards.stats[split]?[lang] ?? LanguageStats()
                print(
                    String(
                        format: "%-9@ %-10@ %11d %12d %12d", lang as NSString, split as NSString, s.documents, s.bytes,
                        s.tokens))
                let t = totals[split] ?? (0, 0, 0)
                totals[split] = (t.0 + s.documents, t.1 + s.bytes, t.2 + s.tokens)
            }
        }
        for split in TokenShards.splits {
            let t = totals[split] ?? (0, 0, 0)
            print(String(format: "%-9@ %-10@ %11d %12d %12d", "all" as NSString, split as NSString, t.0, t.1, t.2))
        }
    }
}
