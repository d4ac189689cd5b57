using System.Net;
using System.Net.Http.Json;
using System.Text;
using Airlock.Core.Api;
using Airlock.Envd.Client;
using Airlock.Testing;

namespace Airlock.IntegrationTests;

[Collection("airlockd")]
[Trait("Category", "Integration")]
public sealed class SandboxSecurityTests(HostFixture fixture) : IClassFixture<HostFixture>
{
    private AirlockHost Host => fixture.Host;

    [Theory(Timeout = 180_000)]
    [InlineData("low")]
    [InlineData("medium")]
    public async Task File_writes_with_dot_dot_absolute_paths_and_symlinks_never_touch_host_files(string risk)
    {
        var canaryDir = Directory.CreateTempSubdirectory("airlock-canary-");
        var canary = Path.Combine(canaryDir.FullName, "canary.txt");
        await File.WriteAllTextAsync(canary, "host original\n");
        var sandbox = await Host.CreateSandboxAsync(new NewSandboxRequest { TemplateId = "base", Risk = risk, Timeout = 120 });
        var envd = Host.Envd(sandbox);
        try
        {
            // A symlink inside the sandbox pointing at the host path of the canary.
            var (exit, _, stderr) = await Host.RunAsync(sandbox, $"ln -s {canary} /home/user/escape && ls -l /home/user/escape");
            Assert.True(exit == 0, stderr);
            await envd.WriteFileAsync("/home/user/escape", new MemoryStream("through symlink\n"u8.ToArray()), CancellationToken.None);

            // Relative traversal and an absolute path to the canary: both resolve inside the sandbox.
            await TryWrite(envd, "../../../../../../" + canary.TrimStart('/'));
            await TryWrite(envd, canary);
            await TryWrite(envd, "/etc/passwd");

            Assert.Equal("host original\n", await File.ReadAllTextAsync(canary));
            Assert.Single(Directory.GetFiles(canaryDir.FullName));

            // The write through the symlink landed in the sandbox's own view of that path, if anywhere.
            var (_, inside, _) = await Host.RunAsync(sandbox, $"cat {canary} 2>/dev/null || echo absent; head -1 /etc/passwd");
            Assert.DoesNotContain("host original", inside);
            Assert.StartsWith("root:x:0:0", inside.Split('\n')[1]);
        }
        finally
        {
            await Host.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}");
            canaryDir.Delete(recursive: true);
        }

        static async Task TryWrite(EnvdClient envd, string path)
        {
            try
            {
                await envd.WriteFileAsync(path, new MemoryStream("attack\n"u8.ToArray()), CancellationToken.None);
            }
            catch (EnvdException ex)
            {
                Assert.InRange(ex.HttpStatus, 400, 499);
            }
        }
    }

    [Theory(Timeout = 240_000)]
    [InlineData("low")]
    [InlineData("medium")]
    public async Task A_fork_bomb_and_a_memory_bomb_are_contained_and_airlockd_stays_up(string risk)
    {
        var bombed = await Host.CreateSandboxAsync(new NewSandboxRequest { TemplateId = "base", Risk = risk, Timeout = 120, MemoryMB = 128 });
        var bystander = await Host.CreateSandboxAsync();
        try
        {
            var (memExit, _, _) = await Host.RunAsync(bombed, "python3 -c 'x = bytearray(1 << 30); print(len(x))'");
            Assert.NotEqual(0, memExit);

            // Every copy stops forking after 8 s and the group is killed at 10 s, so the bomb dies out; then the same
            // sandbox must run commands again (the agent kept room: commands are under RLIMIT_NPROC below pids.max).
            await Host.RunAsync(bombed, "timeout -s KILL 10 bash -c 'end=$((SECONDS + 8)); b() { [ $SECONDS -lt $end ] && { b | b & }; }; b; wait' 2>/dev/null; echo bombed");
            var survived = "";
            for (var attempt = 0; attempt < 15 && !survived.Contains("survived", StringComparison.Ordinal); attempt++)
            {
                try
                {
                    survived = (await Host.RunAsync(bombed, "echo survived")).Stdout;
                }
                catch (EnvdException e)
                {
                    survived = e.Message; // a start refused while the bomb dies out: try again
                }

                if (!survived.Contains("survived", StringComparison.Ordinal))
                {
                    await Task.Delay(TimeSpan.FromSeconds(2));
                }
            }

            Assert.Contains("survived", survived);

            using var health = await Host.Http.GetAsync("/health");
            Assert.Equal(HttpStatusCode.OK, health.StatusCode);
            var (exit, stdout, _) = await Host.RunAsync(bystander, "echo fine");
            Assert.Equal((0, "fine\n"), (exit, stdout));
        }
        finally
        {
            await Host.Http.DeleteAsync($"/sandboxes/{bombed.SandboxId}");
            await Host.Http.DeleteAsync($"/sandboxes/{bystander.SandboxId}");
        }

        Assert.Empty(Leftovers.Find([bombed.SandboxId, bystander.SandboxId], Host.DataDir));
    }

    [Fact(Timeout = 120_000)]
    public async Task Envd_routes_need_the_sandboxs_own_access_token()
    {
        var a = await Host.CreateSandboxAsync();
        var b = await Host.CreateSandboxAsync();
        try
        {
            using var http = new HttpClient { BaseAddress = Host.BaseUrl };
            foreach (var token in new[] { null, "wrong", b.EnvdAccessToken })
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, "/process.Process/List") { Content = new StringContent("{}", Encoding.UTF8, "application/json") };
                request.Headers.Add("E2b-Sandbox-Id", a.SandboxId);
                request.Headers.Add("E2b-Sandbox-Port", "49983");
                if (token is not null)
                {
                    request.Headers.Add("X-Access-Token", token);
                }

                using var response = await http.SendAsync(request);
                Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            }

            // The Host-header form routes too.
            using var byHost = new HttpRequestMessage(HttpMethod.Get, "/health");
            byHost.Headers.Host = $"49983-{a.SandboxId}.{Host.Options.Domain}";
            using var healthy = await http.SendAsync(byHost);
            Assert.True(healthy.IsSuccessStatusCode, $"{(int)healthy.StatusCode}");

            using var otherPort = new HttpRequestMessage(HttpMethod.Get, "/");
            otherPort.Headers.Host = $"8080-{a.SandboxId}.{Host.Options.Domain}";
            using var refused = await http.SendAsync(otherPort);
            Assert.Equal(HttpStatusCode.BadGateway, refused.StatusCode);
        }
        finally
        {
            await Host.Http.DeleteAsync($"/sandboxes/{a.SandboxId}");
            await Host.Http.DeleteAsync($"/sandboxes/{b.SandboxId}");
        }
    }

    [Fact(Timeout = 120_000)]
    public async Task An_oversized_upload_is_a_413_and_writes_nothing()
    {
        var small = await AirlockHost.StartAsync(o => o with { MaxUploadBytes = 1 << 20 });
        try
        {
            var sandbox = await small.CreateSandboxAsync();
            var envd = small.Envd(sandbox);
            var ex = await Assert.ThrowsAsync<EnvdException>(() => envd.WriteFileAsync("/home/user/big.bin", new MemoryStream(new byte[2 << 20]), CancellationToken.None));
            Assert.Equal(413, ex.HttpStatus);
            var (_, stdout, _) = await small.RunAsync(sandbox, "ls /home/user/big.bin 2>&1 || true");
            Assert.Contains("No such file", stdout);
            await small.Http.DeleteAsync($"/sandboxes/{sandbox.SandboxId}");
        }
        finally
        {
            await small.DisposeAsync();
            small.DeleteDataDir();
        }
    }
}
