using System.Globalization;
using System.Text;

namespace Airlock.Testing.Fuzz;

/// <summary>
/// A bounded, seeded generator of malformed requests for airlockd's control API and the envd routes it forwards.
/// Request <c>i</c> of seed <c>s</c> depends on nothing but <c>(s, i)</c>, so one finding replays alone.
/// </summary>
/// <remarks>
/// It never sends a request that is both valid and destructive for the fuzzed sandbox (a DELETE, pause or short
/// timeout with the right key goes to an id that is not running), never creates a sandbox (every create names no
/// template or is not JSON) and starts only commands that end by themselves, so a run measures the server, not the
/// damage a correct request may do. Known findings fixed elsewhere are left out where they are, each with its name.
/// </remarks>
internal sealed partial class FuzzGenerator(int seed, FuzzTargets targets)
{
    private static readonly string[] Families =
    [
        "control-method", "control-json", "control-query", "control-auth", "control-path", "raw-http",
        "envd-unary", "envd-stream", "envd-files", "envd-signed", "envd-auth", "envd-route",
    ];

    public int Seed => seed;

    public IEnumerable<FuzzRequest> Generate(int count)
    {
        for (var i = 0; i < count; i++)
        {
            yield return Make(i);
        }
    }

    public FuzzRequest Make(int index)
    {
        var rng = new Random(HashCode.Combine(seed, index) ^ (index * 7919));
        var family = Families[rng.Next(Families.Length)];
        var context = new Ctx(rng, index, targets);
        return family switch
        {
            "control-method" => ControlMethod(context),
            "control-json" => ControlJson(context),
            "control-query" => ControlQuery(context),
            "control-auth" => ControlAuth(context),
            "control-path" => ControlPath(context),
            "raw-http" => RawHttp(context),
            "envd-unary" => EnvdUnary(context),
            "envd-stream" => EnvdStream(context),
            "envd-files" => EnvdFiles(context),
            "envd-signed" => EnvdSigned(context),
            "envd-auth" => EnvdAuth(context),
            _ => EnvdRoute(context),
        };
    }

    /// <summary>The per-request state: its random source and the pieces every family draws from.</summary>
    private sealed class Ctx(Random rng, int index, FuzzTargets targets)
    {
        public Random Rng { get; } = rng;
        public int Index { get; } = index;
        public FuzzTargets T { get; } = targets;

        public T1 Pick<T1>(IReadOnlyList<T1> items) => items[Rng.Next(items.Count)];

        public bool Chance(int percent) => Rng.Next(100) < percent;

        public string RandomId() => Convert.ToHexStringLower(Bytes(10));

        public byte[] Bytes(int n)
        {
            var b = new byte[n];
            Rng.NextBytes(b);
            return b;
        }

        /// <summary>A string meant to break parsers: control bytes, NUL, unicode, huge, quotes, traversal, nothing.</summary>
        public string Junk()
        {
            return Rng.Next(14) switch
            {
                0 => "",
                1 => "\0",
                2 => "a\0b",
                3 => "../../../../etc/passwd",
                4 => "ünïcødé-😀-\u202e-\ufeff",
                5 => new string('A', Rng.Next(1, 9000)),
                6 => "\"'`;$(id)|&<>",
                7 => "%00%2e%2e%2f%ff",
                8 => "\r\nX-Injected: 1",
                9 => "-1",
                10 => "18446744073709551616",
                11 => "NaN",
                12 => Encoding.Latin1.GetString(Bytes(Rng.Next(1, 64))),
                _ => RandomId(),
            };
        }

        /// <summary>A JSON value of a random type (for "wrong type" fields).</summary>
        public string JsonValue()
        {
            return Rng.Next(11) switch
            {
                0 => "null",
                1 => "true",
                2 => "-1",
                3 => "1e309",
                4 => "9223372036854775808",
                5 => "[]",
                6 => "{}",
                7 => "\"" + JsonEscape(Junk()) + "\"",
                8 => "[" + string.Join(",", Enumerable.Repeat("{\"a\":[1]}", Rng.Next(1, 50))) + "]",
                9 => new string('[', 300) + new string(']', 300),
                _ => "0.5",
            };
        }

        public static string JsonEscape(string s)
        {
            var sb = new StringBuilder();
            foreach (var c in s)
            {
                sb.Append(c switch
                {
                    '"' => "\\\"",
                    '\\' => "\\\\",
                    < ' ' => $"\\u{(int)c:x4}",
                    _ => c.ToString(),
                });
            }

            return sb.ToString();
        }

        /// <summary>Breaks a valid JSON text: truncates, adds garbage, duplicates keys, swaps a type, or leaves it.</summary>
        public byte[] Mangle(string json)
        {
            var text = Rng.Next(10) switch
            {
                0 => json[..Rng.Next(json.Length)],
                1 => json + Junk(),
                2 => json.Replace(":", ": " + JsonValue() + ", \"dup\":", StringComparison.Ordinal),
                3 => json.Replace("\"", "'", StringComparison.Ordinal),
                4 => "\ufeff" + json,
                5 => json.Insert(Rng.Next(json.Length), "\0"),
                6 => "{\"unknownField\":" + JsonValue() + "," + json.TrimStart('{'),
                7 => json.Insert(Math.Max(1, json.Length - 1), ",\"zzz\":" + JsonValue()),
                _ => json,
            };
            var bytes = Encoding.UTF8.GetBytes(text);
            if (Chance(5))
            {
                bytes = [.. bytes, 0xff, 0xfe, 0xc0, 0x80]; // invalid UTF-8
            }

            return bytes;
        }
    }

    private static FuzzRequest Req(Ctx c, string family, string method, string target, IEnumerable<KeyValuePair<string, string>> headers, byte[]? body = null, FuzzExpect expect = FuzzExpect.NoServerError) =>
        new(c.Index, family, method, target, headers.ToList(), body ?? [], expect);

    private static KeyValuePair<string, string> H(string name, string value) => new(name, value);

    private static string Num(long n) => n.ToString(CultureInfo.InvariantCulture);
}
