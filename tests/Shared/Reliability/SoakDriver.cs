using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using Airlock.Core.Api;

namespace Airlock.Testing.Reliability;

/// <summary>One pause/resume cycle: how long each step took and how much was checked after it.</summary>
public sealed record SoakCycle(int Cycle, string PauseMode, double PauseMs, double ResumeMs, double VerifyMs, int Files, long GrowingBytes);

/// <summary>
/// Pause/resume soak (E2B users lose files from the second resume on: e2b-dev/E2B#884). Every cycle writes a new
/// file through <c>POST /files</c> and appends to one growing file with a command, pauses, resumes, then compares
/// the checksum of every file written so far (computed on the host from the bytes sent) and reads the growing file
/// back through <c>GET /files</c>. Any difference throws, naming the cycle.
/// </summary>
public static class SoakDriver
{
    private const string Dir = "/home/user/soak";

    /// <summary>Runs <paramref name="cycles"/> cycles; <paramref name="pauseBody"/> gives each cycle's pause request (null: the boundary's default).</summary>
    public static async Task<IReadOnlyList<SoakCycle>> RunAsync(AirlockHost host, SandboxCreated sandbox, int cycles, Func<int, PauseRequest?> pauseBody, Action<SoakCycle> progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(host);
        ArgumentNullException.ThrowIfNull(sandbox);
        ArgumentNullException.ThrowIfNull(pauseBody);
        ArgumentNullException.ThrowIfNull(progress);
        var expected = new SortedDictionary<string, string>(StringComparer.Ordinal);
        var growing = new MemoryStream();
        var results = new List<SoakCycle>();
        await RunCheckedAsync(host, sandbox, $"mkdir -p {Dir}", -1, cancellationToken);
        for (var cycle = 0; cycle < cycles; cycle++)
        {
            var name = $"cycle-{cycle:D3}.bin";
            var bytes = RandomNumberGenerator.GetBytes(4096 + cycle);
            using (var content = new MemoryStream(bytes))
            {
                await host.Envd(sandbox).WriteFileAsync($"{Dir}/{name}", content, cancellationToken);
            }

            expected[name] = Convert.ToHexStringLower(SHA256.HashData(bytes));
            var chunk = RandomNumberGenerator.GetBytes(1024);
            await RunCheckedAsync(host, sandbox, $"printf '%s' '{Convert.ToBase64String(chunk)}' | base64 -d >> {Dir}/growing.bin", cycle, cancellationToken);
            growing.Write(chunk);
            expected["growing.bin"] = Convert.ToHexStringLower(SHA256.HashData(growing.ToArray()));

            var body = pauseBody(cycle);
            var sw = Stopwatch.StartNew();
            using (var pause = body is null
                ? await host.Http.PostAsync($"/sandboxes/{sandbox.SandboxId}/pause", null, cancellationToken)
                : await host.Http.PostAsJsonAsync($"/sandboxes/{sandbox.SandboxId}/pause", body, ApiJsonContext.Default.PauseRequest, cancellationToken))
            {
                Expect(pause.StatusCode == HttpStatusCode.NoContent, cycle, $"pause answered {(int)pause.StatusCode} {await pause.Content.ReadAsStringAsync(cancellationToken)}");
            }

            var pauseMs = sw.Elapsed.TotalMilliseconds;
            var paused = await host.Http.GetFromJsonAsync($"/sandboxes/{sandbox.SandboxId}", ApiJsonContext.Default.SandboxDetail, cancellationToken);
            Expect(paused?.State == "paused", cycle, $"state after pause is {paused?.State}");

            sw.Restart();
            using (var resume = await host.Http.PostAsJsonAsync($"/sandboxes/{sandbox.SandboxId}/connect", new ResumeRequest { Timeout = 3600 }, ApiJsonContext.Default.ResumeRequest, cancellationToken))
            {
                Expect(resume.StatusCode == HttpStatusCode.Created, cycle, $"resume answered {(int)resume.StatusCode} {await resume.Content.ReadAsStringAsync(cancellationToken)}");
            }

            var resumeMs = sw.Elapsed.TotalMilliseconds;
            sw.Restart();
            var (_, listing, _) = await RunCheckedAsync(host, sandbox, $"cd {Dir} && sha256sum * | sort -k2", cycle, cancellationToken);
            var found = listing.Split('\n', StringSplitOptions.RemoveEmptyEntries)
                .Select(line => line.Split("  ", 2))
                .ToDictionary(parts => parts[1], parts => parts[0], StringComparer.Ordinal);
            foreach (var (file, hash) in expected)
            {
                Expect(found.TryGetValue(file, out var got), cycle, $"{file} is missing after resume; present: {string.Join(", ", found.Keys)}");
                Expect(got == hash, cycle, $"{file} changed: sha256 {got}, expected {hash}");
            }

            Expect(found.Count == expected.Count, cycle, $"{found.Count} files present, {expected.Count} written");
            await using (var read = await host.Envd(sandbox).ReadFileAsync($"{Dir}/growing.bin", cancellationToken))
            {
                using var copy = new MemoryStream();
                await read.CopyToAsync(copy, cancellationToken);
                Expect(copy.ToArray().AsSpan().SequenceEqual(growing.ToArray()), cycle, $"GET /files of growing.bin returned {copy.Length} bytes that differ from the {growing.Length} written");
            }

            var result = new SoakCycle(cycle, body?.Memory is { } memory ? (memory ? "memory" : "disk") : "default", pauseMs, resumeMs, sw.Elapsed.TotalMilliseconds, expected.Count, growing.Length);
            results.Add(result);
            progress(result);
        }

        return results;
    }

    private static async Task<(int Exit, string Stdout, string Stderr)> RunCheckedAsync(AirlockHost host, SandboxCreated sandbox, string command, int cycle, CancellationToken cancellationToken)
    {
        var result = await host.RunAsync(sandbox, command, cancellationToken);
        Expect(result.ExitCode == 0, cycle, $"`{command[..Math.Min(command.Length, 80)]}` exited {result.ExitCode}: {result.Stderr}");
        return result;
    }

    private static void Expect(bool condition, int cycle, string message)
    {
        if (!condition)
        {
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"soak cycle {cycle}: {message}"));
        }
    }
}
