# Homebrew formula template. To publish: put it in a tap (github.com/OWNER/homebrew-tap, as
# Formula/git-credential-azdo.rb), replace OWNER, VERSION and the sha256 of the release
# tarball (`shasum -a 256 vVERSION.tar.gz`), then `brew install OWNER/tap/git-credential-azdo`.
class GitCredentialAzdo < Formula
  desc "Git credential helper for Azure DevOps with Microsoft Entra ID tokens, no PATs"
  homepage "https://github.com/OWNER/git-credential-azdo"
  url "https://github.com/OWNER/git-credential-azdo/archive/refs/tags/vVERSION.tar.gz"
  sha256 "REPLACE_WITH_THE_TARBALL_SHA256"
  license any_of: ["MIT", "Apache-2.0"]
  head "https://github.com/OWNER/git-credential-azdo.git", branch: "main"

  depends_on "rust" => :build
  depends_on "git"

  def install
    # Both binaries: the helper git runs and the daemon it starts.
    system "cargo", "install", *std_cargo_args
    # Completions and man pages, generated from the command-line definition.
    system "cargo", "run", "--locked", "--example", "generate", "--", buildpath/"generated"
    bash_completion.install "generated/completions/git-credential-azdo.bash" => "git-credential-azdo"
    zsh_completion.install "generated/completions/_git-credential-azdo"
    fish_completion.install "generated/completions/git-credential-azdo.fish"
    man1.install Dir["generated/man/*.1"]
  end

  # Optional: `brew services start git-credential-azdo` keeps the daemon running from login.
  # Without it, the client starts the daemon on first use.
  service do
    run [opt_bin/"git-credential-azdo-daemon", "--service"]
    keep_alive successful_exit: false
    log_path var/"log/git-credential-azdo.log"
    error_log_path var/"log/git-credential-azdo.log"
  end

  def caveats
    <<~EOS
      Set git up to use the helper for Azure DevOps:
        git-credential-azdo setup
      then sign in once:
        git-credential-azdo login --org YOUR_ORG
    EOS
  end

  test do
    assert_match version.to_s, shell_output("#{bin}/git-credential-azdo --version")
    ENV["HOME"] = testpath
    system bin/"git-credential-azdo", "setup"
    assert_match "git-credential-azdo",
                 shell_output("git config --global --get-all credential.https://dev.azure.com.helper")
  end
end
