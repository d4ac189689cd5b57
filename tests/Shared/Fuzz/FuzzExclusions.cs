namespace Airlock.Testing.Fuzz;

/// <summary>
/// Findings that are known and being fixed elsewhere, left out of the generated requests so the CI run stays green
/// meanwhile. Each names its finding; the lead turns it off at merge once the fix is in.
/// </summary>
internal static class FuzzExclusions
{
    /// <summary>
    /// Non-ASCII header values on envd routes that are forwarded to the agent: airlockd answers 502
    /// sandbox_unreachable (YARP cannot send them) instead of 400. Found by this suite; owner: EnvdGateway (edge).
    /// </summary>
    public static bool NonAsciiEnvdHeaders { get; set; } = Environment.GetEnvironmentVariable("AIRLOCK_FUZZ_ALL_FINDINGS") is null;

    /// <summary>
    /// GET /files of /proc files, character devices, FIFOs and sockets (issue 12 findings 1 and 2: 500 with an
    /// empty body, or an agent thread blocked forever). Owner: the guest agent's file API.
    /// </summary>
    public static bool SpecialFileReads { get; set; } = Environment.GetEnvironmentVariable("AIRLOCK_FUZZ_ALL_FINDINGS") is null;
}
