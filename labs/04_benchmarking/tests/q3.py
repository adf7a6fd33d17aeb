OK_FORMAT = True

test = {   'name': 'q3',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': ">>> assert predicted_speedup is not ... and why_not is not ..., 'not done yet: set predicted_speedup and why_not'\n"
                                               ">>> assert 1 < predicted_speedup < 8, f'NF4 reads fewer bytes than bf16, but not more than 4 bits vs 16: got {predicted_speedup!r}'\n"
                                               ">>> assert isinstance(why_not, str) and len(why_not.split()) >= 5, 'one sentence, in your words'\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
