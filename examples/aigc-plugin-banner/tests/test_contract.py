"""The platform's contract kit, run against this plugin: two lines of setup, a dozen checks."""

from aigc_plugin_banner import BannerGenerator

from generators.testing.contract import PluginContract


class TestBannerPlugin(PluginContract):
    plugin = BannerGenerator
    sample_params = {
        "headline": "Spring sale",
        "subtitle": "20% off everything",
        "width": 320,
        "height": 160,
        "seed": 3,
    }
    config = {"watermark": "acme.test", "signing_key": "kit-test-key"}
