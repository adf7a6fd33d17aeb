OK_FORMAT = True

test = {   'name': 'q1',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': ">>> assert ttft is not ... and tpot is not ... and (itl is not ...), 'not done yet: set ttft, tpot and itl'\n"
                                               ">>> assert abs(ttft - 0.42) < 1e-09, f'TTFT is first token - request sent: expected 0.42 s, got {ttft!r}'\n"
                                               ">>> assert len(itl) == len(stream) - 1, f'one gap per pair of consecutive tokens: expected {len(stream) - 1} values, got {len(itl)}'\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
