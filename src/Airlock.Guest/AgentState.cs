using System.Security.Cryptography;
using System.Text;

namespace Airlock.Guest;

/// <summary>What can change while the agent runs: the access token and the sandbox's environment (SetIdentity swaps both).</summary>
internal sealed class AgentState(AgentOptions options)
{
    private volatile byte[] _token = Encoding.UTF8.GetBytes(options.AccessToken);
    private volatile IReadOnlyDictionary<string, string> _environment = options.SandboxEnvironment;

    /// <summary>The environment every command inherits.</summary>
    public IReadOnlyDictionary<string, string> Environment => _environment;

    /// <summary>Constant-time comparison with the current token.</summary>
    public bool Accepts(string presented) => CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(presented), _token);

    /// <summary>The signature of a <c>/files</c> URL made with the current token (see <see cref="SignedFileUrls"/>).</summary>
    public string Sign(string path, string operation, string user, long? expiration) => SignedFileUrls.Sign(_token, path, operation, user, expiration);

    public void SetToken(string token) => _token = Encoding.UTF8.GetBytes(token);

    public void SetEnvironment(IReadOnlyDictionary<string, string> environment) => _environment = environment;
}
