using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Airlock.Envd;
using Airlock.Envd.Client;
using Airlock.Envd.Connect;

namespace Airlock.Guest.Tests;

/// <summary>
/// The file API against what sandbox code can plant at a path: FIFOs, sockets, devices, symlinks to them, and kernel
/// pseudo-files (issue 12, findings 1 and 2). Each test has its own agent (a class fixture), so one that leaves agent
/// threads blocked on today's code cannot slow the others.
/// </summary>
[Trait("Category", "Integration")]
public sealed class SpecialFileTests(AgentFixture agent) : IClassFixture<AgentFixture>, IDisposable
{
    private readonly string _dir = Directory.CreateDirectory(Path.Combine(agent.Root, "special-" + Guid.NewGuid().ToString("N")[..6])).FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact(Timeout = 30_000)]
    public async Task Reading_a_FIFO_is_refused_at_once_instead_of_waiting_for_a_writer()
    {
        var fifo = await MakeFifoAsync("out.txt");
        var (status, body, elapsed) = await GetAsync(fifo, TimeSpan.FromSeconds(5));
        AssertRefused(status, body, HttpStatusCode.BadRequest, "FIFO");
        Assert.True(elapsed < TimeSpan.FromSeconds(2), $"took {elapsed}");
    }

    [Fact(Timeout = 30_000)]
    public async Task Reading_a_symlink_to_a_FIFO_is_refused_too()
    {
        var fifo = await MakeFifoAsync("pipe");
        var link = Path.Combine(_dir, "result.json");
        File.CreateSymbolicLink(link, fifo);
        var (status, body, _) = await GetAsync(link, TimeSpan.FromSeconds(5));
        AssertRefused(status, body, HttpStatusCode.BadRequest, "FIFO");
    }

    [Fact(Timeout = 30_000)]
    public async Task A_signed_download_URL_of_a_FIFO_is_refused_too()
    {
        var fifo = await MakeFifoAsync("signed");
        var signature = "v1_" + Convert.ToBase64String(SHA256.HashData(Encoding.UTF8.GetBytes($"{fifo}:read::{agent.Token}"))).TrimEnd('=');
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        using var response = await agent.Http.GetAsync(new Uri(agent.BaseAddress, $"files?path={Uri.EscapeDataString(fifo)}&signature={Uri.EscapeDataString(signature)}"), timeout.Token);
        AssertRefused(response.StatusCode, await response.Content.ReadAsStringAsync(timeout.Token), HttpStatusCode.BadRequest, "FIFO");
    }

    [Fact(Timeout = 60_000)]
    public async Task Two_hundred_abandoned_FIFO_reads_leave_the_agent_answering_with_few_threads()
    {
        var fifo = await MakeFifoAsync("abandoned");
        var normal = Path.Combine(_dir, "normal.txt");
        await File.WriteAllTextAsync(normal, "still here");
        var threadsBefore = AgentThreads();

        // As an orchestrator polling an output file with a short timeout would: 200 reads, 25 at a time, each given up
        // after 300 ms. Bounded: at most 8 rounds of 300 ms on an agent that hangs on every one.
        for (var round = 0; round < 8; round++)
        {
            await Task.WhenAll(Enumerable.Range(0, 25).Select(async _ =>
            {
                try
                {
                    await GetAsync(fifo, TimeSpan.FromMilliseconds(300));
                }
                catch (OperationCanceledException)
                {
                    // Abandoned, as the client in the issue did.
                }
            }));
        }

        var clock = Stopwatch.StartNew();
        using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10)))
        {
            var (stdout, _, end) = await RunAsync("echo alive", timeout.Token);
            Assert.Equal(("alive\n", 0), (stdout, end));
        }

        var command = clock.Elapsed;
        clock.Restart();
        var (status, body, _) = await GetAsync(normal, TimeSpan.FromSeconds(10));
        Assert.Equal((HttpStatusCode.OK, "still here"), (status, body));
        Assert.True(command < TimeSpan.FromSeconds(5) && clock.Elapsed < TimeSpan.FromSeconds(5), $"command took {command}, file read took {clock.Elapsed}");
        var threadsAfter = AgentThreads();
        Assert.True(threadsAfter <= threadsBefore + 16, $"the agent went from {threadsBefore} to {threadsAfter} threads");
    }

    [Fact(Timeout = 30_000)]
    public async Task Proc_and_sys_pseudo_files_are_read_whole_never_a_500()
    {
        // st_size 0 (procfs) and 4096 (sysfs) are not their lengths: both used to fail after the headers were sent.
        foreach (var path in new[] { "/proc/version", "/sys/devices/system/cpu/online" })
        {
            var (status, body, _) = await GetAsync(path, TimeSpan.FromSeconds(5));
            Assert.Equal((HttpStatusCode.OK, await File.ReadAllTextAsync(path)), (status, body));
        }

        // Longer than one read (64 KiB): streamed without a length, and still whole.
        var maps = $"/proc/{Environment.ProcessId}/maps";
        var (mapsStatus, mapsBody, _) = await GetAsync(maps, TimeSpan.FromSeconds(10));
        Assert.Equal(HttpStatusCode.OK, mapsStatus);
        Assert.True(mapsBody.Length > 64 * 1024, $"only {mapsBody.Length} bytes");
        Assert.EndsWith("\n", mapsBody, StringComparison.Ordinal);
        Assert.StartsWith(File.ReadLines(maps).First(), mapsBody, StringComparison.Ordinal);
    }

    [Theory(Timeout = 30_000)]
    [InlineData("/proc/self/environ")]
    [InlineData("/proc/thread-self/environ")]
    [InlineData("/proc/self/status")]
    public async Task The_agents_own_proc_entries_are_refused_so_its_token_never_leaves(string path)
    {
        var (status, body, _) = await GetAsync(path, TimeSpan.FromSeconds(5));
        AssertRefused(status, body, HttpStatusCode.Forbidden, "agent");
        Assert.DoesNotContain(agent.Token, body, StringComparison.Ordinal);
        var link = Path.Combine(_dir, "env-" + Guid.NewGuid().ToString("N")[..6]);
        File.CreateSymbolicLink(link, $"/proc/{agent.Pid}/environ");
        (status, body, _) = await GetAsync(link, TimeSpan.FromSeconds(5));
        AssertRefused(status, body, HttpStatusCode.Forbidden, "agent");
    }

    [Theory(Timeout = 30_000)]
    [InlineData("/dev/zero", "character device")]
    [InlineData("/dev/null", "character device")]
    [InlineData("/dev/urandom", "character device")]
    public async Task Character_devices_are_refused(string path, string kind)
    {
        var (status, body, _) = await GetAsync(path, TimeSpan.FromSeconds(5));
        AssertRefused(status, body, HttpStatusCode.BadRequest, kind);
    }

    [Fact(Timeout = 30_000)]
    public async Task A_unix_socket_is_refused()
    {
        var path = Path.Combine(_dir, "agent.sock");
        using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        socket.Bind(new System.Net.Sockets.UnixDomainSocketEndPoint(path));
        socket.Listen();
        var (status, body, _) = await GetAsync(path, TimeSpan.FromSeconds(5));
        AssertRefused(status, body, HttpStatusCode.BadRequest, "socket");
    }

    [Fact(Timeout = 30_000)]
    public async Task Uploading_onto_a_FIFO_is_refused_without_hanging_and_the_FIFO_stays()
    {
        var fifo = await MakeFifoAsync("in.txt");
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(agent.BaseAddress, $"files?path={Uri.EscapeDataString(fifo)}"))
        {
            Content = new ByteArrayContent("payload"u8.ToArray()),
        };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        request.Headers.Add(EnvdProtocol.AccessTokenHeader, agent.Token);
        using var response = await agent.Http.SendAsync(request, timeout.Token);
        AssertRefused(response.StatusCode, await response.Content.ReadAsStringAsync(timeout.Token), HttpStatusCode.BadRequest, "FIFO");
        Assert.True(IsFifo(fifo), "the FIFO was replaced");
        Assert.Empty(Directory.GetFiles(_dir, ".*airlock-*"));
    }

    [Fact(Timeout = 30_000)]
    public async Task Stat_list_and_moving_a_FIFO_across_file_systems_never_open_it()
    {
        var client = agent.Client();
        var fifo = await MakeFifoAsync("listed");
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        Assert.Equal("listed", (await client.StatAsync(fifo, timeout.Token)).Name);
        Assert.Contains(await client.ListDirAsync(_dir, 1, timeout.Token), e => e.Path == fifo);

        // /dev/shm is a tmpfs and the agent's root is not: rename(2) says EXDEV and the agent used to copy by opening.
        var shm = $"/dev/shm/airlock-fifo-{Guid.NewGuid():N}";
        try
        {
            var (_, stderr, exit) = await RunAsync($"mkfifo {shm}", timeout.Token);
            Assert.True(exit == 0, stderr);
            var refused = await Assert.ThrowsAsync<EnvdException>(() => client.MoveAsync(shm, Path.Combine(_dir, "moved"), timeout.Token));
            Assert.Equal(ConnectCodes.FailedPrecondition, refused.Code);
            Assert.Contains("FIFO", refused.Message, StringComparison.Ordinal);
            Assert.True(IsFifo(shm));
            Assert.False(File.Exists(Path.Combine(_dir, "moved")));
        }
        finally
        {
            File.Delete(shm);
        }
    }

    private static bool IsFifo(string path)
    {
        // .NET has no S_ISFIFO; stat(1) says it.
        using var stat = Process.Start(new ProcessStartInfo("stat", ["-c", "%F", path]) { RedirectStandardOutput = true })!;
        var type = stat.StandardOutput.ReadToEnd().Trim();
        stat.WaitForExit();
        return type == "fifo";
    }

    private static void AssertRefused(HttpStatusCode status, string body, HttpStatusCode expected, string mentions)
    {
        Assert.True(status == expected, $"{(int)status}: {body}");
        using var json = JsonDocument.Parse(body);
        Assert.Equal((int)expected, json.RootElement.GetProperty("code").GetInt32());
        Assert.Contains(mentions, json.RootElement.GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    private async Task<string> MakeFifoAsync(string name)
    {
        var path = Path.Combine(_dir, name);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var (_, stderr, exit) = await RunAsync($"mkfifo '{path}'", timeout.Token);
        Assert.True(exit == 0, stderr);
        return path;
    }

    private async Task<(HttpStatusCode Status, string Body, TimeSpan Elapsed)> GetAsync(string path, TimeSpan timeout)
    {
        using var cancel = new CancellationTokenSource(timeout);
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(agent.BaseAddress, $"files?path={Uri.EscapeDataString(path)}"));
        request.Headers.Add(EnvdProtocol.AccessTokenHeader, agent.Token);
        var clock = Stopwatch.StartNew();
        using var response = await agent.Http.SendAsync(request, cancel.Token);
        var body = await response.Content.ReadAsStringAsync(cancel.Token);
        return (response.StatusCode, body, clock.Elapsed);
    }

    private async Task<(string Stdout, string Stderr, int Exit)> RunAsync(string command, CancellationToken cancellationToken)
    {
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        var exit = -1;
        await foreach (var output in agent.Client().StartAsync(new ProcessSpec { Command = "/bin/sh", Args = ["-c", command] }, cancellationToken))
        {
            switch (output)
            {
                case ProcessStdout o: stdout.Append(Encoding.UTF8.GetString(o.Data.Span)); break;
                case ProcessStderr e: stderr.Append(Encoding.UTF8.GetString(e.Data.Span)); break;
                case ProcessExited x: exit = x.ExitCode; break;
            }
        }

        return (stdout.ToString(), stderr.ToString(), exit);
    }

    private int AgentThreads() =>
        int.Parse(File.ReadLines($"/proc/{agent.Pid}/status").First(l => l.StartsWith("Threads:", StringComparison.Ordinal))["Threads:".Length..].Trim(), System.Globalization.CultureInfo.InvariantCulture);
}
