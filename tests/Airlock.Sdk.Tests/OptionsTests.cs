namespace Airlock.Sdk.Tests;

public sealed class OptionsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("airlock-sdk-tests-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static Func<string, string?> Env(params (string Key, string Value)[] vars) =>
        name => vars.FirstOrDefault(v => v.Key == name).Value;

    [Fact]
    public void The_flag_wins_then_AIRLOCK_API_KEY_then_E2B_API_KEY_then_the_bootstrap_key_file()
    {
        File.WriteAllText(Path.Combine(_dir, "bootstrap-key"), "e2b_fromfile\n");
        var all = Env(("AIRLOCK_API_KEY", "e2b_airlock"), ("E2B_API_KEY", "e2b_e2b"), ("AIRLOCK_DATA_DIR", _dir));

        Assert.Equal("e2b_flag", AirlockClientOptions.FromEnvironment(null, "e2b_flag", null, all).ApiKey);
        Assert.Equal("e2b_airlock", AirlockClientOptions.FromEnvironment(null, null, null, all).ApiKey);
        Assert.Equal("e2b_e2b", AirlockClientOptions.FromEnvironment(null, null, null, Env(("E2B_API_KEY", "e2b_e2b"), ("AIRLOCK_DATA_DIR", _dir))).ApiKey);
        Assert.Equal("e2b_fromfile", AirlockClientOptions.FromEnvironment(null, null, null, Env(("AIRLOCK_DATA_DIR", _dir))).ApiKey);
        Assert.Equal("e2b_fromfile", AirlockClientOptions.FromEnvironment(null, null, _dir, Env()).ApiKey);
    }

    [Fact]
    public void No_key_anywhere_leaves_the_key_empty_rather_than_failing()
    {
        var options = AirlockClientOptions.FromEnvironment(null, null, null, Env(("AIRLOCK_DATA_DIR", Path.Combine(_dir, "missing"))));

        Assert.Null(options.ApiKey);
        Assert.Equal(AirlockClientOptions.DefaultBaseUrl, options.BaseUrl);
    }

    [Fact]
    public void The_url_comes_from_the_flag_then_AIRLOCK_URL_and_must_be_http()
    {
        var env = Env(("AIRLOCK_URL", "http://127.0.0.1:9999"), ("AIRLOCK_DATA_DIR", _dir));

        Assert.Equal(new Uri("http://127.0.0.1:9999"), AirlockClientOptions.FromEnvironment(null, null, null, env).BaseUrl);
        Assert.Equal(new Uri("http://127.0.0.1:7000"), AirlockClientOptions.FromEnvironment("http://127.0.0.1:7000", null, null, env).BaseUrl);
        var e = Assert.Throws<ArgumentException>(() => AirlockClientOptions.FromEnvironment("ftp://127.0.0.1", null, null, env));
        Assert.Contains("ftp://127.0.0.1", e.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => AirlockClientOptions.ParseBaseUrl("not a url"));
    }
}
