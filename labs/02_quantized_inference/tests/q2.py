OK_FORMAT = True

test = {   'name': 'q2',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> from helpers.course.feedback import first_failure\n'
                                               '>>> first_failure((lambda: largest_on_l4 is not ..., \'not done yet: set largest_on_l4\'), (lambda: largest_on_l4 in catalog(), lambda: f"a catalog '
                                               'key, e.g. \'qwen2.5-7b\', got {largest_on_l4!r}"), (lambda: q.gpus_to_fit(largest_on_l4, \'int8\', \'L4\', 4096) == 1, lambda: f\'{largest_on_l4} does '
                                               "not fit on one L4 in int8 at 4,096 tokens'))\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
