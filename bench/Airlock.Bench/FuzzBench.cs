using System.Diagnostics;
using System.Globalization;
using System.Net;
using Airlock.Core.Api;
using Airlock.Testing;
using Airlock.Testing.Fuzz;

/// <summary>
/// The reliability suite's long fuzz run: the generator the CI test uses (tests/Shared/Fuzz), ≥ 10,000 requests per
/// seed against an in-process airlockd on loopback, then the same checks (no 5xx, no host file, other tenant untouched,
/// airlockd serving). Prints the seed and the summary; exits 1 when a rule broke.
/// </summary>
internal static class FuzzBench
{
    public static async Task<int> RunAsync(int seed, int count, string risk, bool dryRun)
    {
        if (dryRun)
        {
            var targets = new FuzzTargets("e2b_key", "e2b_other", new FuzzSandbox("aaaaaaaaaaaaaaaaaaaa", "tok"), new FuzzSandbox("bbbbbbbbbbbbbbbbbbbb", "tok2"), "cccccccccccccccccccc", ["/etc/airlock-fuzz-sentinel"]);
            var sw = Stopwatch.StartNew();
            long bytes = 0;
            foreach (var request in new FuzzGenerator(seed, targets).Generate(count))
            {
                bytes += request.ToWire("127.0.0.1").Length;
                if (Environment.GetEnvironmentVariable("FUZZ_PRINT") is not null)
                {
                    Console.WriteLine(request.Describe());
                }
            }

            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"generated {count} requests ({bytes / 1024 / 1024} MiB) in {sw.Elapsed.TotalSeconds:F2} s"));
            return 0;
        }

        await using var host = await AirlockHost.StartAsync(FuzzSession.Configure); // one sandbox per tenant: no fuzzed create boots
        var exit = 0;
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(30));
            await using var session = await FuzzSession.StartAsync(host, new NewSandboxRequest { TemplateId = "base", Risk = risk, Timeout = 3600 }, cts.Token);
            var generator = new FuzzGenerator(seed, session.Targets);
            var summary = await FuzzRunner.RunAsync(new IPEndPoint(IPAddress.Loopback, host.BaseUrl.Port), generator.Generate(count), seed, 4, TimeSpan.FromSeconds(30), TimeSpan.FromMinutes(25), cts.Token);
            var broken = await session.VerifyAsync(cts.Token);
            var rare = summary.FirstByStatus.Where(kv => kv.Key is 201 or 202 or 301 or 302).Select(kv => "first request answered " + kv.Key + ": " + generator.Make(kv.Value).Describe()).ToList();
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"# fuzz, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, risk {risk}, seed {seed}, {count} requests asked"));
            Console.Write(summary.Describe());
            rare.ForEach(Console.WriteLine);
            Console.WriteLine(broken.Count == 0 ? "after: host sentinels, data dir, other tenant's sandbox unchanged; airlockd healthy and runs a new sandbox" : "after: " + string.Join("\n  ", broken));
            exit = summary.Failures.IsEmpty && broken.Count == 0 && summary.Sent == count ? 0 : 1;
            Console.WriteLine(exit == 0 ? "result: PASS" : "result: FAIL");
        }
        finally
        {
            host.DeleteDataDir();
        }

        return exit;
    }
}
