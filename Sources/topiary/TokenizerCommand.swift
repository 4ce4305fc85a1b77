import ArgumentParser
import Foundation
import Model

struct TokenizerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer",
        abstract: "Encode and decode JSON Lines with the byte tokenizer or a Hugging Face tokenizer.json.",
        subcommands: [TokenizerEncode.self, TokenizerDecode.self])
}

/// Reads JSON Lines from standard input, one object per line.
func readJSONLines(_ body: (Int, JSON) throws -> Void) throws {
    var lineNumber = 0
    while let line = readLine(strippingNewline: true) {
        lineNumber += 1
        if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
        guard let json = JSON.parse(Data(line.utf8)) else {
            throw ModelError.invalidInput("stdin line \(lineNumber): not JSON")
        }
        try body(lineNumber, json)
    }
}

func writeJSONLine(_ json: JSON) {
    FileHandle.standardOutput.write(json.data(pretty: false) + Data("\n".utf8))
}

struct TokenizerEncode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encode", abstract: "Read {\"text\": …} lines on stdin; write {\"ids\": […]} lines.")
    @Option(help: "`byte` or a tokenizer.json path.") var tokenizer: String
    @Flag(
        help:
            "Apply the tokenizer's post-processor (add_special_tokens=True: Llama 3's BOS), as data prepare does per document."
    )
    var specialTokens = false

    func run() throws {
        let tok = try loadTokenizer(tokenizer)
        try readJSONLines { n, json in
            guard let text = json["text"]?.string else {
                throw ModelError.invalidInput("stdin line \(n): expected {\"text\": string}")
            }
            // Written as text directly: a JSON tree of ten million ids costs gigabytes.
            var line = "{\"ids\":["
            for (i, id) in (specialTokens ? tok.encodeDocument(text) : tok.encode(text)).enumerated() {
                line += i == 0 ? String(id) : "," + String(id)
            }
            line += "]}\n"
            FileHandle.standardOutput.write(Data(line.utf8))
        }
    }
}

struct TokenizerDecode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decode", abstract: "Read {\"ids\": […]} lines on stdin; write {\"text\": …} lines.")
    @Option(help: "`byte` or a tokenizer.json path.") var tokenizer: String

    func run() throws {
        let tok = try loadTokenizer(tokenizer)
        try readJSONLines { n, json in
            guard let ids = json["ids"]?.array?.compactMap(\.int), ids.count == json["ids"]?.array?.count else {
                throw ModelError.invalidInput("stdin line \(n): expected {\"ids\": [integers]}")
            }
            writeJSONLine(["text": .string(try tok.decode(ids))])
        }
    }
}
