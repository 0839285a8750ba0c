"""prefix.parameter_counts against the real prefix."""

from __future__ import annotations

import pytest

from playground.prefix import PrefixSettings, create_prefix, parameter_counts


@pytest.mark.parametrize("projection", [False, True])
def test_parameter_counts_match_the_real_prefix(tiny, projection):
    for n, h in ((1, 8), (6, 32)):
        s = PrefixSettings(num_virtual_tokens=n, init="random", prefix_projection=projection, encoder_hidden_size=h)
        prefix = create_prefix(tiny, s, seed=0)
        trainable, exported = parameter_counts(tiny, s)
        assert trainable == prefix.trainable_parameters
        assert trainable == sum(p.numel() for p in prefix.parameters() if p.requires_grad)
        assert exported == prefix.exported_parameters == prefix.exported()[1].numel()
        assert (trainable > exported) == projection
